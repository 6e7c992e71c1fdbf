package agent

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sfdiskTable is what sfdisk --json says of a table.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		LastLBA    int64  `json:"lastlba"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			UUID  string `json:"uuid"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("this test needs %s (util-linux's fdisk package on Debian): %v", name, err)
	}
	return p
}

// imageWithTable makes a file of size MiB partitioned by sfdisk with
// script, then extends it to grown MiB, as a disk image written to a
// larger disk is.
func imageWithTable(t testing.TB, script string, size, grown int64) string {
	t.Helper()
	sfdisk := needTool(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.Truncate(createFile(t, p), size<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "-q", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	if err := os.Truncate(p, grown<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

func createFile(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func readTable(t *testing.T, p string) (sfdiskTable, string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", p).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var tab sfdiskTable
	if err := json.Unmarshal(out, &tab); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	verify, _ := exec.Command("sfdisk", "--verify", p).CombinedOutput()
	return tab, string(verify)
}

func TestGrowPartition(t *testing.T) {
	const mib = 2048 // sectors
	for _, tc := range []struct {
		name, table, script string
		part                int
		wantSize            int64 // sectors; 0: an error containing wantErr
		wantErr             string
	}{
		{"msdos root last", TableMSDOS, "label: dos\nstart=2048, size=16384, type=ef\nstart=18432, size=32768, type=83\n", 2,
			128*mib - 18432, ""},
		{"gpt root last", TableGPT, "label: gpt\nstart=2048, size=16384\nstart=18432, size=32768\n", 2,
			128*mib - 1 - 32 - 18432, ""},
		{"gpt entries out of order", TableGPT, "label: gpt\nstart=40960, size=16384\nstart=2048, size=16384\n", 1,
			128*mib - 1 - 32 - 40960, ""},
		{"msdos not the last", TableMSDOS, "label: dos\nstart=2048, size=16384\nstart=18432, size=32768\n", 1, 0, "not the last"},
		{"gpt not the last", TableGPT, "label: gpt\nstart=2048, size=16384\nstart=18432, size=32768\n", 1, 0, "not the last"},
		{"msdos empty", TableMSDOS, "label: dos\nstart=2048, size=16384\n", 3, 0, "empty"},
		{"gpt empty", TableGPT, "label: gpt\nstart=2048, size=16384\n", 3, 0, "empty"},
		{"msdos extended", TableMSDOS, "label: dos\nstart=2048, size=16384\nstart=18432, size=32768, type=5\n", 2, 0, "extended"},
		{"msdos logical", TableMSDOS, "label: dos\nstart=2048, size=16384\n", 5, 0, "primary"},
		{"gpt table said msdos", TableMSDOS, "label: gpt\nstart=2048, size=16384\n", 1, 0, "protective"},
		{"msdos table said gpt", TableGPT, "label: dos\nstart=2048, size=16384\n", 1, 0, "no GPT header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := imageWithTable(t, tc.script, 64, 128)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := GrowPartition(f, 128<<20, 512, tc.table, tc.part)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("GrowPartition: %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("GrowPartition: %v", err)
			}
			if got != tc.wantSize*512 {
				t.Errorf("GrowPartition = %d bytes, want %d", got, tc.wantSize*512)
			}
			tab, verify := readTable(t, p)
			if n := tab.PartitionTable.Partitions; len(n) < tc.part || n[tc.part-1].Size != tc.wantSize {
				t.Errorf("sfdisk sees partitions %+v, want partition %d of %d sectors", n, tc.part, tc.wantSize)
			}
			if tc.table == TableGPT {
				if want := int64(128*mib - 1 - 32 - 1); tab.PartitionTable.LastLBA != want {
					t.Errorf("last usable LBA %d, want %d", tab.PartitionTable.LastLBA, want)
				}
				if !strings.Contains(verify, "No errors detected") || strings.Contains(verify, "mismatch") ||
					strings.Contains(verify, "not on the end") {
					t.Errorf("sfdisk --verify:\n%s", verify)
				}
			}
			// Growing again changes nothing.
			again, err := GrowPartition(f, 128<<20, 512, tc.table, tc.part)
			if err != nil || again != got {
				t.Errorf("second GrowPartition = %d, %v; want %d", again, err, got)
			}
		})
	}
}

func TestGrowPartitionRefusesBadCRC(t *testing.T) {
	p := imageWithTable(t, "label: gpt\nstart=2048, size=16384\n", 64, 128)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// One byte of the first entry's name: the entries' CRC no longer holds.
	if _, err := f.WriteAt([]byte{'x'}, 1024+60); err != nil {
		t.Fatal(err)
	}
	if _, err := GrowPartition(f, 128<<20, 512, TableGPT, 1); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("GrowPartition of a table with a bad CRC: %v, want a CRC error", err)
	}
}
