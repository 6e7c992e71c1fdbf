package agent

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// guidText is a GUID as GPT entries hold it, in the text form sfdisk
// prints.
func guidText(b []byte) string {
	return strings.ToUpper(fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16]))
}

// TestFindESP: the EFI system partition of tables sfdisk wrote is found
// with the number, place and signature sfdisk reports for it; a table
// without one says so.
func TestFindESP(t *testing.T) {
	for _, tc := range []struct {
		name, table, script string
		want                ESP // Signature checked against sfdisk
		wantErr             string
	}{
		{"msdos ESP first", TableMSDOS, "label: dos\nstart=2048, size=8192, type=ef\nstart=10240, type=83\n", ESP{Number: 1, Start: 2048, Size: 8192}, ""},
		{"msdos ESP third", TableMSDOS, "label: dos\nstart=2048, size=2048, type=83\nstart=4096, size=2048, type=82\nstart=6144, size=4096, type=ef\n", ESP{Number: 3, Start: 6144, Size: 4096}, ""},
		{"gpt ESP first", TableGPT, "label: gpt\nstart=2048, size=8192, type=uefi\nstart=10240, type=linux\n", ESP{Number: 1, Start: 2048, Size: 8192, GPT: true}, ""},
		{"gpt ESP second", TableGPT, "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\nstart=4096, size=8192, type=uefi\nstart=12288, type=linux\n", ESP{Number: 2, Start: 4096, Size: 8192, GPT: true}, ""},
		{"msdos without ESP", TableMSDOS, "label: dos\nstart=2048, type=83\n", ESP{}, "no EFI system partition"},
		{"gpt without ESP", TableGPT, "label: gpt\nstart=2048, type=linux\n", ESP{}, "no EFI system partition"},
		{"gpt read as msdos", TableMSDOS, "label: gpt\nstart=2048, size=8192, type=uefi\n", ESP{}, "no EFI system partition"},
		{"msdos read as gpt", TableGPT, "label: dos\nstart=2048, size=8192, type=ef\n", ESP{}, "no GPT header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := imageWithTable(t, tc.script, 16, 16)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			esp, err := FindESP(f, 512, tc.table)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FindESP: %+v, %v: want an error saying %q", esp, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tab, _ := readTable(t, p)
			sig := esp.Signature
			esp.Signature = [16]byte{}
			if esp != tc.want {
				t.Fatalf("FindESP: %+v, want %+v", esp, tc.want)
			}
			if tc.table == TableGPT {
				if got, want := guidText(sig[:]), tab.PartitionTable.Partitions[esp.Number-1].UUID; got != want {
					t.Errorf("signature %s, sfdisk says the partition's GUID is %s", got, want)
				}
			} else if got := fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(sig[:])); got != tab.PartitionTable.ID || !bytes.Equal(sig[4:], make([]byte, 12)) {
				t.Errorf("signature % x, sfdisk says the disk's is %s", sig, tab.PartitionTable.ID)
			}
		})
	}
}

// TestLoadOption: the boot entry is active, named, and its device path
// is the partition's hard drive node, the loader's file node and the end.
func TestLoadOption(t *testing.T) {
	for _, tc := range []struct {
		name string
		esp  ESP
		want string
	}{
		{"msdos", ESP{Number: 1, Start: 2048, Size: 8192, Signature: [16]byte{0x78, 0x56, 0x34, 0x12}},
			`rackplane node1 HD(1,MBR,0x12345678,2048,8192)/\EFI\BOOT\BOOTX64.EFI`},
		{"gpt", ESP{Number: 2, Start: 4096, Size: 1 << 33, GPT: true, Signature: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
			`rackplane node1 HD(2,GPT,0102030405060708090a0b0c0d0e0f10,4096,8589934592)/\EFI\BOOT\BOOTX64.EFI`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := LoadOption("rackplane node1", tc.esp, `\EFI\BOOT\BOOTX64.EFI`)
			if a := binary.LittleEndian.Uint32(opt); a != 1 {
				t.Errorf("attributes %#x, want LOAD_OPTION_ACTIVE", a)
			}
			// 6 header bytes, the description's 16 UTF-16 units, the path.
			if n := int(binary.LittleEndian.Uint16(opt[4:])); 6+32+n != len(opt) || n != 42+4+2*22+4 {
				t.Errorf("device path of %d bytes in an option of %d", n, len(opt))
			}
			got, err := describeOption(opt)
			if err != nil || got != tc.want {
				t.Errorf("option reads %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// TestSetBootNext: the entry is written with the variables' attributes,
// put in BootOrder right after the entry the machine booted from, and
// made BootNext; a second deployment of the same disk reuses its entry
// and leaves the order as it is.
func TestSetBootNext(t *testing.T) {
	dir := t.TempDir()
	put := func(name string, data ...byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name+"-"+efiGlobal), append([]byte{7, 0, 0, 0}, data...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	get := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name+"-"+efiGlobal))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:4], []byte{7, 0, 0, 0}) {
			t.Errorf("%s has attributes % x, want non-volatile, boot and runtime access", name, b[:4])
		}
		return b[4:]
	}
	put("Boot0000", 1, 2, 3)                    // a disk the firmware found
	put("Boot0001", 4, 5, 6)                    // the network boot
	put("Boot0003", 7, 8, 9)                    // the shell
	put("BootOrder", 0x01, 0, 0x00, 0, 0x03, 0) // 0001 0000 0003
	put("BootCurrent", 0x01, 0)
	put("Timeout", 0, 0) // not a boot entry
	opt := LoadOption("rackplane node1", ESP{Number: 1, Start: 2048, Size: 8192}, RemovableLoader())
	for round := range 2 {
		num, err := SetBootNext(dir, opt)
		if err != nil || num != 2 {
			t.Fatalf("round %d: SetBootNext: %04X, %v: want Boot0002, the lowest free", round, num, err)
		}
		if !bytes.Equal(get("Boot0002"), opt) {
			t.Errorf("round %d: Boot0002 is not the option", round)
		}
		if got, want := get("BootOrder"), []byte{1, 0, 2, 0, 0, 0, 3, 0}; !bytes.Equal(got, want) {
			t.Errorf("round %d: BootOrder % x, want % x (the network, the installed system, the rest)", round, got, want)
		}
		if got := get("BootNext"); !bytes.Equal(got, []byte{2, 0}) {
			t.Errorf("round %d: BootNext % x, want 02 00", round, got)
		}
		if !bytes.Equal(get("Boot0000"), []byte{1, 2, 3}) {
			t.Error("another entry changed")
		}
	}
	// Without BootCurrent or BootOrder, the entry is the only one.
	dir = t.TempDir()
	if num, err := SetBootNext(dir, opt); err != nil || num != 0 || !bytes.Equal(get("BootOrder"), []byte{0, 0}) {
		t.Fatalf("empty variables: %04X, %v, BootOrder % x", num, err, get("BootOrder"))
	}
}

// FuzzFindESP: a disk's first sectors are the image's, whatever it is;
// reading them never panics, and an ESP found lies where the table says.
func FuzzFindESP(f *testing.F) {
	for _, script := range []string{"label: dos\nstart=2048, size=2048, type=ef\n", "label: gpt\nstart=2048, size=2048, type=uefi\n"} {
		p := imageWithTable(f, script, 4, 4)
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:34*512])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, table := range []string{TableMSDOS, TableGPT} {
			for _, ss := range []int{512, 4096, 0, 100} {
				if esp, err := FindESP(readOnly{bytes.NewReader(b)}, ss, table); err == nil && esp.Number == 0 {
					t.Fatalf("%s: ESP %+v without a number", table, esp)
				}
			}
		}
	})
}

// readOnly is a Disk that refuses writes: FindESP only reads.
type readOnly struct{ *bytes.Reader }

func (readOnly) WriteAt([]byte, int64) (int, error) { return 0, os.ErrPermission }
