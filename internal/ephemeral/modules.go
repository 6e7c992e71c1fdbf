package ephemeral

import (
	"bytes"
	"debug/elf"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Modules are the kernel modules the environment loads, by module name:
// the drivers of the disks and NICs of common servers and of QEMU VMs
// (virtio, e1000, NVMe, AHCI), efivarfs, so that the agent can read EFI
// variables, and IPMI's system interface driver and device interface,
// which make the BMC /dev/ipmi0 for the agent to ask its LAN address.
// Those the kernel has built in are skipped; the modules they depend on
// come too.
var Modules = []string{
	// virtio, over PCI and (arm64's "virt" machine) MMIO
	"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "virtio_net",
	// disks
	"nvme", "ahci", "sd_mod",
	// NICs
	"e1000", "e1000e", "igb",
	"efivarfs",
	// the root filesystem of a disk image, which a deploy boot's agent
	// mounts to seed the installed system (jbd2 and mbcache come as its
	// dependencies; its checksums' crc32c is a crypto algorithm it asks
	// for by name, which no dependency names: its module comes first)
	"crc32c_generic", "ext4",
	// the BMC: KCS, SMIC and BT system interfaces (ipmi_msghandler
	// comes as their dependency)
	"ipmi_si", "ipmi_devintf",
}

// module is a kernel module found in a kernel package.
type module struct {
	name    string // as modinfo names it, with underscores
	file    string // path in the package
	depends []string
	soft    []string // soft dependencies to load first, loaded too if there
	post    []string // soft dependencies to load after it, likewise
}

// modName is the canonical form of a module name: the kernel treats '-'
// and '_' in module names alike.
func modName(s string) string {
	return strings.ReplaceAll(strings.TrimSuffix(path.Base(s), ".ko"), "-", "_")
}

// parseModule reads the name and dependencies of a module from its
// .modinfo section, as modinfo does.
func parseModule(file string, body []byte) (module, error) {
	f, err := elf.NewFile(bytes.NewReader(body))
	if err != nil {
		return module{}, fmt.Errorf("module %s: %w", file, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return module{}, fmt.Errorf("module %s has no .modinfo section", file)
	}
	info, err := sec.Data()
	if err != nil {
		return module{}, fmt.Errorf("module %s: .modinfo: %w", file, err)
	}
	m := module{name: modName(file), file: file}
	for _, kv := range bytes.Split(info, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			m.name = modName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					m.depends = append(m.depends, modName(d))
				}
			}
		case "softdep":
			// "pre: a b post: c": modprobe loads a and b before the
			// module and c after it; there is no modprobe here, so the
			// load order does, when the package has them. A post
			// dependency may depend on the module itself
			// (ipmi_msghandler's post: ipmi_devintf): taken as a pre
			// one, it would make a cycle.
			post := false
			for _, d := range strings.Fields(v) {
				switch {
				case d == "pre:":
					post = false
				case d == "post:":
					post = true
				case strings.HasSuffix(d, ":"):
				case post:
					m.post = append(m.post, modName(d))
				default:
					m.soft = append(m.soft, modName(d))
				}
			}
		}
	}
	return m, nil
}

// loadOrder returns the modules of roots and those they depend on, each
// after its dependencies, ties by name (so the order depends on nothing
// but the kernel). A root the kernel has built in (builtin) is skipped;
// one neither built in nor a module is an error, as is a dependency that
// is not a module.
func loadOrder(mods map[string]module, builtin map[string]bool, roots []string) ([]module, error) {
	var out []module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("kernel modules depend on each other in a cycle through %s", name)
		case 2:
			return nil
		}
		m, ok := mods[name]
		if !ok {
			return fmt.Errorf("kernel module %s (needed by %s) is not in the kernel package", name, from)
		}
		state[name] = 1
		deps := slices.Clone(m.depends)
		for _, d := range m.soft {
			if _, ok := mods[d]; ok && !slices.Contains(deps, d) {
				deps = append(deps, d)
			}
		}
		slices.Sort(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m)
		post := slices.Clone(m.post)
		slices.Sort(post)
		for _, d := range post {
			// One being visited depends on this module, and comes
			// right after it anyway.
			if _, ok := mods[d]; ok && state[d] != 1 {
				if err := visit(d, name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	rs := slices.Clone(roots)
	slices.Sort(rs)
	for _, r := range rs {
		r = modName(r)
		if _, ok := mods[r]; !ok && builtin[r] {
			continue
		}
		if _, ok := mods[r]; !ok {
			return nil, fmt.Errorf("kernel module %s is neither built in nor in the kernel package", r)
		}
		if err := visit(r, "the environment"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseBuiltin reads modules.builtin: the paths of the modules built
// into the kernel, one a line.
func parseBuiltin(b []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[modName(l)] = true
		}
	}
	return out
}
