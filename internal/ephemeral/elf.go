package ephemeral

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
)

// elfMachine is the ELF machine of each architecture.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkStatic reports why b cannot run in the initramfs on arch: it is
// not an ELF executable for arch, or it needs a dynamic loader (the
// initramfs has no libc).
func checkStatic(b []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	if f.Machine != elfMachine[arch] {
		return fmt.Errorf("built for %s, not %s", f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: build it with CGO_ENABLED=0")
		}
	}
	return nil
}
