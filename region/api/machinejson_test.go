package api

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
)

// encodingJSON is what writeJSON writes for v.
func encodingJSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func machineSamples() []rackplane.Machine {
	rack := "6f1c1a52-5a8f-4a55-9d1e-6d1a8c3f0b11"
	dep := "0193a5c2-0000-7000-8000-000000000001"
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 123456000, time.UTC)
	t1 := t0.Add(time.Hour).In(time.FixedZone("x", 3600))
	t2 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []rackplane.Machine{
		{},
		{ID: "a", Hostname: "node1", MACs: []string{}, Tags: []string{}, Actions: []string{}, CreatedAt: t0, UpdatedAt: t0},
		{ID: "b", Hostname: "node2", MACs: []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}, Arch: "amd64", BootRackID: &rack,
			BootFile: "grubx64.efi", Status: "deployed", StatusReason: "why <not> & \"so\"\n\t\\", Origin: "api", OS: "ubuntu",
			Release: "noble", Subarch: "generic", ImageVersionID: "20261130", DeployRackID: &rack, PreseedName: "default",
			PreseedVersion: 3, DeploymentID: &dep, DeployStartedAt: &t0, DeployedAt: &t1, PowerState: "on", PowerCheckedAt: &t2,
			PowerOutcome: "ok", PowerError: "bmc said \u2028 and \u2029 and \x01\x1f\x7f", CreatedAt: t0, UpdatedAt: t1,
			Tags: []string{"gpu", "rack-7"}, Version: 42, Actions: []string{"release", "mark-broken"},
			Hardware: &rackplane.HardwareSummary{Cores: 8, Threads: 16, MemoryBytes: 1 << 36, Disks: 2, DiskBytes: 1 << 41, Firmware: "uefi"}},
		{ID: "c", Hostname: "bad \xff\xfe utf-8 é 日本", Hardware: &rackplane.HardwareSummary{}, PreseedVersion: -1, Version: -5},
	}
}

// TestMachineJSON: the machine responses written by hand are the bytes
// encoding/json writes for them.
func TestMachineJSON(t *testing.T) {
	ms := machineSamples()
	for i := range ms {
		got := append(appendMachine(nil, &ms[i], "\n"), '\n')
		if want := encodingJSON(t, ms[i]); !bytes.Equal(got, want) {
			t.Errorf("machine %d:\n%s\nwant\n%s", i, got, want)
		}
	}
	for _, page := range [][]rackplane.Machine{{}, ms[:1], ms} {
		got := appendMachinesPage(nil, page, "node-\"9\"")
		if want := encodingJSON(t, map[string]any{"machines": page, "next": "node-\"9\""}); !bytes.Equal(got, want) {
			t.Errorf("page of %d:\n%s\nwant\n%s", len(page), got, want)
		}
	}
}

// FuzzMachineJSON: for any text in a machine's fields, the hand-written
// bytes are encoding/json's.
func FuzzMachineJSON(f *testing.F) {
	for _, s := range []string{"", "node1", "<&>", "\xff", "\u2028", "a\"b\\c\x00"} {
		f.Add(s, s, int64(1))
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64) {
		m := rackplane.Machine{ID: a, Hostname: b, MACs: []string{a, b}, StatusReason: a, PowerError: b, BootRackID: &a,
			DeploymentID: &b, Tags: []string{b}, Version: n, PreseedVersion: n,
			CreatedAt: time.Unix(n%(1<<34), n%1e9).UTC(), Hardware: &rackplane.HardwareSummary{Firmware: a, MemoryBytes: n}}
		got := append(appendMachine(nil, &m, "\n"), '\n')
		if want := encodingJSON(t, m); !bytes.Equal(got, want) {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
	})
}

func BenchmarkMachinesPageJSON(b *testing.B) {
	ms := make([]rackplane.Machine, 100)
	for i := range ms {
		ms[i] = machineSamples()[2]
	}
	b.Run("by_hand", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf = appendMachinesPage(buf[:0], ms, "x")
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			encodingJSON(b, map[string]any{"machines": ms, "next": "x"})
		}
	})
}
