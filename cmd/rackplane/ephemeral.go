package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/rackplane/rackplane/internal/ephemeral"
)

// runBuildEphemeral builds the ephemeral environment into an image
// source directory, from Debian packages apt downloads and the agent
// built from this module's source (or given).
func runBuildEphemeral(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images build-ephemeral", flag.ContinueOnError)
	arch := fs.String("arch", "amd64", "architecture: "+strings.Join(ephemeral.Arches, " or "))
	out := fs.String("out", "", "directory to write manifest.json, vmlinuz, initrd.img and ephemeral.json to (required)")
	agent := fs.String("agent", "", "static rackplane-agent binary for -arch (default: build it from the module source in -source)")
	source := fs.String("source", "", "directory of the Rackplane source the agent is built from (default: the current directory)")
	cache := fs.String("cache-dir", "", "apt package lists and downloaded packages, kept between builds (default: rackplane/ephemeral in the user's cache directory)")
	version := fs.String("version", "", "the image's version (default: the kernel package's version and a hash of the files)")
	refresh := fs.Bool("refresh", false, "fetch the package lists again even if they are less than a day old")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("images build-ephemeral: unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		return errors.New("images build-ephemeral: -out DIR is required")
	}
	if !slices.Contains(ephemeral.Arches, *arch) {
		return fmt.Errorf("images build-ephemeral: -arch %q: one of %s", *arch, strings.Join(ephemeral.Arches, ", "))
	}
	o := ephemeral.Options{Arch: *arch, Out: *out, Agent: *agent, Source: *source, CacheDir: *cache, Version: *version,
		Log: slog.New(slog.NewTextHandler(stderr, nil))}
	if *refresh {
		o.ListsMaxAge = -1
	}
	res, err := ephemeral.Build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "built %s in %s\n", res.VersionID, res.Dir)
	for _, n := range []string{ephemeral.KernelFile, ephemeral.InitrdFile} {
		fmt.Fprintf(stdout, "  %-11s %10d bytes  sha256 %s\n", n, res.Sizes[n], res.Info.Files[n])
	}
	names := make([]string, 0, len(res.Info.Packages))
	for p := range res.Info.Packages {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		fmt.Fprintf(stdout, "  package %s %s\n", p, res.Info.Packages[p])
	}
	fmt.Fprintf(stdout, "  modules %s\n", strings.Join(res.Info.Modules, " "))
	fmt.Fprintf(stdout, "import it with: rackplane images import RACK %s\n", res.Dir)
	return nil
}
