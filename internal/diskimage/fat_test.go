package diskimage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestESP checks the EFI system partitions fat16 writes with the
// dosfstools' checker, which must find nothing to fix, and the files it
// lists; and that what cannot be written is refused.
func TestESP(t *testing.T) {
	if testing.Short() {
		t.Skip("needs fsck.fat (dosfstools, in .ci/packages): skipped with -short")
	}
	fsck, err := exec.LookPath("fsck.fat")
	if err != nil {
		t.Fatal("fsck.fat missing: install Debian package dosfstools")
	}
	big := bytes.Repeat([]byte("grub"), 1<<18) // 1 MiB, many clusters
	tests := []struct {
		name    string
		size    int64
		files   map[string][]byte
		want    []string // the paths fsck.fat lists, sorted (the label is one)
		wantErr string
	}{
		{"the image's", 32 << 20, map[string][]byte{"EFI/BOOT/BOOTX64.EFI": big},
			[]string{"/EFI", "/EFI/BOOT", "/EFI/BOOT/BOOTX64.EFI", "/ESP"}, ""},
		{"files side by side, one a cluster, one empty", 16 << 20, map[string][]byte{
			"EFI/BOOT/BOOTX64.EFI": big, "EFI/BOOT/GRUB.CFG": make([]byte, 2048), "EFI/DEBIAN/EMPTY": nil, "README.TXT": []byte("hi")},
			[]string{"/EFI", "/EFI/BOOT", "/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/GRUB.CFG", "/EFI/DEBIAN", "/EFI/DEBIAN/EMPTY", "/ESP", "/README.TXT"}, ""},
		{"too small for FAT16", 4 << 20, map[string][]byte{"A": nil}, nil, "no FAT16"},
		{"files larger than the partition", 9 << 20, map[string][]byte{"A": make([]byte, 10<<20)}, nil, "too small"},
		{"a long name", 16 << 20, map[string][]byte{"EFI/BOOT/BOOTX64LONG.EFI": nil}, nil, "8.3"},
		{"two dots", 16 << 20, map[string][]byte{"EFI/BOOT/BOOTX64.EFI.SIG": nil}, nil, "8.3"},
		{"a space", 16 << 20, map[string][]byte{"EFI/BOOT/BOOT X.EFI": nil}, nil, "8.3"},
		{"a lower case name", 16 << 20, map[string][]byte{"EFI/BOOT/bootx64.efi": nil}, nil, "8.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := fat16(tt.size, 2048, "ESP", tt.files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(img)) != tt.size {
				t.Fatalf("%d bytes, want %d", len(img), tt.size)
			}
			p := filepath.Join(t.TempDir(), "esp.img")
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(fsck, "-n", "-v", "-l", p).CombinedOutput()
			if err != nil || bytes.Contains(out, []byte("Auto-")) || bytes.Contains(out, []byte("Fix")) {
				t.Fatalf("fsck.fat: %v\n%s", err, out)
			}
			var listed []string
			for _, l := range strings.Split(string(out), "\n") {
				if f, ok := strings.CutPrefix(l, "Checking file "); ok && !strings.HasSuffix(f, "/.") && !strings.HasSuffix(f, "/..") {
					listed = append(listed, strings.Fields(f)[0])
				}
			}
			slices.Sort(listed)
			if strings.Join(listed, " ") != strings.Join(tt.want, " ") {
				t.Errorf("files %q, want %q\n%s", listed, tt.want, out)
			}
			again, _ := fat16(tt.size, 2048, "ESP", tt.files)
			if !bytes.Equal(img, again) {
				t.Error("two FATs of the same files differ")
			}
		})
	}
}
