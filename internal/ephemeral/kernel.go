package ephemeral

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"
)

// Kernel is the kernel of a Debian kernel package with the modules to
// load, in load order.
type Kernel struct {
	Package string // the versioned kernel package, linux-image-6.1.0-…
	Version string // its version
	Release string // the kernel release, as uname -r says it
	Image   []byte // /boot/vmlinuz-<release>
	Modules []Module
}

// Module is a kernel module to load.
type Module struct {
	Name string // as modinfo names it, with underscores
	File string // the file's name, such as virtio_blk.ko
	Body []byte
}

// Kernel downloads the kernel package linux-image-<arch> depends on and
// returns its kernel and the modules of roots with those they depend
// on, each after its dependencies; roots the kernel has built in are
// skipped.
func (a *APT) Kernel(ctx context.Context, roots []string) (*Kernel, error) {
	kpkg, err := a.DependsOn(ctx, "linux-image-"+a.arch, "linux-image-")
	if err != nil {
		return nil, err
	}
	kdeb, kver, err := a.Download(ctx, kpkg)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Package: kpkg, Version: kver}
	var builtinList []byte
	mods := map[string]module{}
	modBodies := map[string][]byte{}
	err = DebFiles(ctx, kdeb, func(name string) bool {
		return (strings.HasPrefix(name, "boot/vmlinuz-") || strings.HasPrefix(name, "lib/modules/")) &&
			(strings.HasSuffix(name, ".ko") || strings.HasSuffix(name, "/modules.builtin") || strings.HasPrefix(name, "boot/vmlinuz-"))
	}, func(name string, body []byte) error {
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			k.Image, k.Release = body, strings.TrimPrefix(name, "boot/vmlinuz-")
		case strings.HasSuffix(name, "/modules.builtin"):
			builtinList = body
		default:
			m, err := parseModule(name, body)
			if err != nil {
				return err
			}
			mods[m.name] = m
			modBodies[m.name] = body
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if k.Image == nil {
		return nil, fmt.Errorf("package %s has no /boot/vmlinuz-*", kpkg)
	}
	order, err := loadOrder(mods, parseBuiltin(builtinList), roots)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kpkg, err)
	}
	for _, m := range order {
		k.Modules = append(k.Modules, Module{Name: m.name, File: path.Base(m.file), Body: modBodies[m.name]})
	}
	return k, nil
}

// AddModules puts the modules in t's lib/modules and their load order,
// a file name a line, in etc/modules.order, which an /init reads.
func (k *Kernel) AddModules(t Tree) {
	t.Add("lib/modules", Entry{Mode: ModeDir})
	var order bytes.Buffer
	for _, m := range k.Modules {
		t.Add("lib/modules/"+m.File, Entry{Mode: ModeFile, Data: m.Body})
		fmt.Fprintln(&order, m.File)
	}
	t.Add("etc/modules.order", Entry{Mode: ModeFile, Data: order.Bytes()})
}

// ModuleNames returns the modules' names in load order.
func (k *Kernel) ModuleNames() []string {
	var out []string
	for _, m := range k.Modules {
		out = append(out, m.Name)
	}
	return out
}

// Busybox downloads busybox-static and returns its /bin/busybox and the
// package's version.
func (a *APT) Busybox(ctx context.Context) ([]byte, string, error) {
	deb, ver, err := a.Download(ctx, "busybox-static")
	if err != nil {
		return nil, "", err
	}
	var busybox []byte
	if err := DebFiles(ctx, deb, func(n string) bool { return n == "bin/busybox" }, func(_ string, b []byte) error {
		busybox = b
		return nil
	}); err != nil {
		return nil, "", err
	}
	if busybox == nil {
		return nil, "", fmt.Errorf("package busybox-static has no /bin/busybox")
	}
	return busybox, ver, nil
}
