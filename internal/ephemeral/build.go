// Package ephemeral builds the ephemeral environment machines boot into
// for commissioning and rescue: a Debian kernel and an initramfs holding
// busybox, the kernel modules of common disks and NICs, and
// rackplane-agent, with an image source manifest so that a rack imports
// it like any image (os "rackplane", release "ephemeral").
//
// The build is reproducible: the same packages and agent give the same
// bytes, whatever the time or the machine.
package ephemeral

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The image's identity in the store: VersionID
// rackplane/<arch>/generic/ephemeral/stable/<version>.
const (
	OS      = "rackplane"
	Release = "ephemeral"
	Subarch = "generic"
	Label   = "stable"

	// KernelFile, InitrdFile and InfoFile are the names of the
	// version's files (and of the files in the output directory).
	KernelFile = "vmlinuz"
	InitrdFile = "initrd.img"
	InfoFile   = "ephemeral.json"
)

// Arches are the architectures the environment is built for, as Go and
// Debian both name them.
var Arches = []string{"amd64", "arm64"}

//go:embed init.sh
var initScript []byte

// UDHCPCScript is udhcpc's script: it configures the interface from the
// lease (address, default route, resolv.conf).
//
//go:embed udhcpc.sh
var UDHCPCScript []byte

// Options say what to build.
type Options struct {
	// Arch is amd64 or arm64.
	Arch string
	// Out is the directory to write manifest.json and the files to.
	Out string
	// Agent is the path of a static rackplane-agent for Arch; empty
	// builds it from Source.
	Agent string
	// Source is the directory of the Rackplane module the agent is built
	// from when Agent is empty; empty means the module the current
	// directory is in.
	Source string
	// CacheDir keeps apt's package lists and the downloaded packages
	// between builds; empty means rackplane/ephemeral in the user's cache
	// directory.
	CacheDir string
	// ListsMaxAge is how old the package lists may be before they are
	// fetched again (default 24h); a negative value always fetches them.
	ListsMaxAge time.Duration
	// Version is the image's version; empty derives it from the kernel
	// package's version and the files' hashes, so it changes whenever a
	// file does.
	Version string
	Log     *slog.Logger
}

// Info is what InfoFile records: where the image's contents come from.
type Info struct {
	Arch     string            `json:"arch"`
	Version  string            `json:"version"`
	Kernel   string            `json:"kernel"` // the kernel release, as uname -r says it
	Packages map[string]string `json:"packages"`
	Agent    struct {
		SHA256 string `json:"sha256"`
		// Built says how: the Go toolchain's version, or "given" for
		// -agent.
		Built string `json:"built"`
	} `json:"agent"`
	Modules []string          `json:"modules"`
	Files   map[string]string `json:"files"` // sha256 by name
}

// Result is what Build wrote.
type Result struct {
	VersionID string
	Dir       string
	Info      Info
	Sizes     map[string]int64
}

// Build writes the environment for o.Arch to o.Out: manifest.json,
// KernelFile, InitrdFile and InfoFile.
func Build(ctx context.Context, o Options) (*Result, error) {
	if !slices.Contains(Arches, o.Arch) {
		return nil, fmt.Errorf("arch %q: the ephemeral environment is built for %s", o.Arch, strings.Join(Arches, " and "))
	}
	if o.Out == "" {
		return nil, errors.New("no output directory")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a, unlock, err := OpenAPT(ctx, o.CacheDir, "ephemeral", o.Arch, o.ListsMaxAge, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	info := Info{Arch: o.Arch, Packages: map[string]string{}, Files: map[string]string{}}

	// The kernel and its modules, busybox.
	k, err := a.Kernel(ctx, Modules)
	if err != nil {
		return nil, err
	}
	info.Kernel = k.Release
	info.Packages[k.Package] = k.Version
	log.Info("package", "name", k.Package, "version", k.Version)
	busybox, bver, err := a.Busybox(ctx)
	if err != nil {
		return nil, err
	}
	info.Packages["busybox-static"] = bver
	log.Info("package", "name", "busybox-static", "version", bver)

	// The agent.
	agent, built, err := agentBinary(ctx, o, log)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(agent)
	info.Agent.SHA256, info.Agent.Built = hex.EncodeToString(sum[:]), built

	// The initramfs.
	t := Tree{}
	for _, d := range []string{"bin", "dev", "etc", "proc", "run", "sys", "tmp", "usr/share/udhcpc"} {
		t.Add(d, Entry{Mode: ModeDir})
	}
	t.Add("dev/console", Entry{Mode: ModeCharDev, Rdev: 5<<8 | 1})
	t.Add("bin/busybox", Entry{Mode: ModeExec, Data: busybox})
	t.Add("bin/sh", Entry{Mode: ModeSymlink, Data: []byte("busybox")})
	t.Add("bin/rackplane-agent", Entry{Mode: ModeExec, Data: agent})
	t.Add("init", Entry{Mode: ModeExec, Data: initScript})
	t.Add("usr/share/udhcpc/default.script", Entry{Mode: ModeExec, Data: UDHCPCScript})
	k.AddModules(t)
	info.Modules = k.ModuleNames()
	pkgs := make([]string, 0, len(info.Packages))
	for p, v := range info.Packages {
		pkgs = append(pkgs, p+"="+v)
	}
	slices.Sort(pkgs)
	t.Add("etc/rackplane-ephemeral", Entry{Mode: ModeFile, Data: []byte(o.Arch + " " + strings.Join(pkgs, " ") + "\n")})
	initrd, err := t.Archive()
	if err != nil {
		return nil, err
	}

	files := map[string][]byte{KernelFile: k.Image, InitrdFile: initrd}
	for n, b := range files {
		s := sha256.Sum256(b)
		info.Files[n] = hex.EncodeToString(s[:])
	}
	info.Version = o.Version
	if info.Version == "" {
		// A hash of every file (InfoFile as it is without the version):
		// a store refuses a version whose files change, so any change
		// must make a new version.
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		h := sha256.Sum256(b)
		info.Version = k.Version + "-" + hex.EncodeToString(h[:])[:12]
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	files[InfoFile] = append(infoJSON, '\n')
	return write(o, info, files)
}

// write puts the files and their manifest in o.Out, the manifest last, so
// that a directory with a manifest is a whole source.
func write(o Options, info Info, files map[string][]byte) (*Result, error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	res := &Result{Dir: o.Out, Info: info, Sizes: map[string]int64{}}
	type file struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	var listed []file
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		b := files[n]
		s := sha256.Sum256(b)
		if err := WriteFile(filepath.Join(o.Out, n), b); err != nil {
			return nil, err
		}
		listed = append(listed, file{Name: n, SHA256: hex.EncodeToString(s[:]), Size: int64(len(b))})
		res.Sizes[n] = int64(len(b))
	}
	type version struct {
		Kind    string `json:"kind"`
		OS      string `json:"os"`
		Release string `json:"release"`
		Arch    string `json:"arch"`
		Subarch string `json:"subarch"`
		Label   string `json:"label"`
		Version string `json:"version"`
		Files   []file `json:"files"`
	}
	m := struct {
		Format   string    `json:"format"`
		Versions []version `json:"versions"`
	}{"rackplane.image_manifest.v1", []version{{Kind: "image", OS: OS, Release: Release, Arch: o.Arch, Subarch: Subarch,
		Label: Label, Version: info.Version, Files: listed}}}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := WriteFile(filepath.Join(o.Out, "manifest.json"), append(b, '\n')); err != nil {
		return nil, err
	}
	res.VersionID = strings.Join([]string{OS, o.Arch, Subarch, Release, Label, info.Version}, "/")
	return res, nil
}

// WriteFile replaces path with b through a temporary file, so a reader
// never sees half a file.
func WriteFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// agentBinary returns the agent to put in the initramfs and how it was
// made: o.Agent as given (it must be a static ELF for o.Arch), or built
// from the module's source without cgo, paths or build ids, so that the
// same source and toolchain give the same binary.
func agentBinary(ctx context.Context, o Options, log *slog.Logger) ([]byte, string, error) {
	if o.Agent != "" {
		b, err := os.ReadFile(o.Agent)
		if err != nil {
			return nil, "", fmt.Errorf("agent: %w", err)
		}
		if err := checkStatic(b, o.Arch); err != nil {
			return nil, "", fmt.Errorf("agent %s: %w", o.Agent, err)
		}
		return b, "given", nil
	}
	src := o.Source
	if src == "" {
		src = "."
	}
	gomod, err := goOutput(ctx, src, nil, "env", "GOMOD")
	if err != nil {
		return nil, "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return nil, "", fmt.Errorf("%s is not in the Rackplane module: build from its source, or give -agent", src)
	}
	dir := filepath.Dir(gomod)
	if mod, err := goOutput(ctx, dir, nil, "list", "-m"); err != nil || mod != "github.com/rackplane/rackplane" {
		return nil, "", fmt.Errorf("%s is module %q, not github.com/rackplane/rackplane: give -agent (%v)", dir, mod, err)
	}
	tmp, err := os.MkdirTemp("", "rackplane-agent-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "rackplane-agent")
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + o.Arch}
	log.Info("agent_build", "source", dir, "arch", o.Arch)
	if _, err := goOutput(ctx, dir, env, "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, "./cmd/rackplane-agent"); err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, "", err
	}
	if err := checkStatic(b, o.Arch); err != nil {
		return nil, "", fmt.Errorf("built agent: %w", err)
	}
	// The toolchain, not the source's revision: a commit that leaves
	// the agent as it was must not make a new version.
	gover, err := goOutput(ctx, dir, nil, "env", "GOVERSION")
	if err != nil {
		return nil, "", err
	}
	return b, gover, nil
}

func goOutput(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(string(out)), nil
}
