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

	"github.com/rackplane/rackplane/internal/diskimage"
)

// runBuildDisk builds the demo disk image (installer family "agent")
// into an image source directory, from Debian packages apt downloads.
func runBuildDisk(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images build-disk", flag.ContinueOnError)
	arch := fs.String("arch", "amd64", "architecture: "+strings.Join(diskimage.Arches, " or "))
	out := fs.String("out", "", "directory to write manifest.json, "+diskimage.DiskFile+" and "+diskimage.InfoFile+" to (required)")
	cache := fs.String("cache-dir", "", "apt package lists and downloaded packages, kept between builds (default: rackplane/diskimage in the user's cache directory)")
	version := fs.String("version", "", "the image's version (default: the kernel package's version and a hash of the image)")
	refresh := fs.Bool("refresh", false, "fetch the package lists again even if they are less than a day old")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("images build-disk: unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		return errors.New("images build-disk: -out DIR is required")
	}
	if !slices.Contains(diskimage.Arches, *arch) {
		return fmt.Errorf("images build-disk: -arch %q: one of %s", *arch, strings.Join(diskimage.Arches, ", "))
	}
	o := diskimage.Options{Arch: *arch, OutDir: *out, CacheDir: *cache, Version: *version,
		Log: slog.New(slog.NewTextHandler(stderr, nil))}
	if *refresh {
		o.ListsMaxAge = -1
	}
	res, err := diskimage.Build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "built %s in %s\n", res.VersionID, res.Dir)
	fmt.Fprintf(stdout, "  disk %d bytes raw, sha256 %s; %s %d bytes\n", res.DiskSize, res.DiskSHA256, diskimage.DiskFile, res.CompressedSize)
	names := make([]string, 0, len(res.Info.Packages))
	for p := range res.Info.Packages {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		fmt.Fprintf(stdout, "  package %s %s\n", p, res.Info.Packages[p])
	}
	fmt.Fprintf(stdout, "import it with: rackplane images import RACK %s\n", res.Dir)
	return nil
}
