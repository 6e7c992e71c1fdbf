package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/agentapi"
	"github.com/rackplane/rackplane/rack/machinecred"
)

const (
	testMachine = "0190f0e0-0000-7000-8000-00000000d001"
	testDeploy  = "0190f0e0-0000-7000-8000-00000000d0d0"
)

// cutAfter writes at most limit bytes of a response, then aborts the
// connection: what a network that breaks mid-download does.
type cutAfter struct {
	http.ResponseWriter
	limit int64
}

func (c *cutAfter) Write(p []byte) (int, error) {
	if c.limit <= 0 {
		panic(http.ErrAbortHandler)
	}
	if int64(len(p)) > c.limit {
		_, _ = c.ResponseWriter.Write(p[:c.limit])
		c.limit = 0
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.limit -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

// fileServer serves body with Range support, cutting the first cuts
// responses after cutAt bytes each; it counts requests and notes the
// Range headers asked.
type fileServer struct {
	body   []byte
	cuts   int
	cutAt  int64
	n      atomic.Int32
	mu     sync.Mutex
	ranges []string
}

func (f *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(f.n.Add(1))
	f.mu.Lock()
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	f.mu.Unlock()
	if n <= f.cuts {
		w = &cutAfter{ResponseWriter: w, limit: f.cutAt}
	}
	http.ServeContent(w, r, "disk.img.zst", time.Time{}, bytes.NewReader(f.body))
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestStreamResumesAfterBrokenConnections(t *testing.T) {
	body := make([]byte, 3<<20+123)
	rand.NewChaCha8([32]byte{1}).Read(body)
	for _, tc := range []struct {
		name     string
		cuts     int
		attempts int
		wantErr  bool
	}{
		{"no trouble", 0, 3, false},
		{"three cuts", 3, 3, false},
		{"more cuts than tries", 5, 3, false}, // each cut reads bytes: progress resets the count
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fileServer{body: body, cuts: tc.cuts, cutAt: 500 << 10}
			srv := httptest.NewServer(fs)
			defer srv.Close()
			s := &Stream{URL: srv.URL + "/f", Size: int64(len(body)), Attempts: tc.attempts, Backoff: time.Millisecond}
			s.Open(context.Background())
			got, err := io.ReadAll(s)
			s.Close()
			if (err != nil) != tc.wantErr {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("read %d bytes, sha256 %s; want %d, %s", len(got), sum(got), len(body), sum(body))
			}
			if s.Resumed() != tc.cuts {
				t.Errorf("resumed %d times, want %d", s.Resumed(), tc.cuts)
			}
			fs.mu.Lock()
			defer fs.mu.Unlock()
			if len(fs.ranges) != tc.cuts+1 || fs.ranges[0] != "" {
				t.Fatalf("ranges asked %q", fs.ranges)
			}
			for i, r := range fs.ranges[1:] {
				if want := fmt.Sprintf("bytes=%d-", int64(i+1)*(500<<10)); r != want {
					t.Errorf("resume %d asked %q, want %q", i+1, r, want)
				}
			}
		})
	}
}

// A server that never sends a byte fails the stream after its attempts.
func TestStreamGivesUp(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s := &Stream{URL: srv.URL, Size: 10, Attempts: 3, Backoff: time.Millisecond}
	s.Open(context.Background())
	if _, err := io.ReadAll(s); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("read: %v, want an error naming the 503", err)
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3", n.Load())
	}
}

// testImage is a disk image of 16 MiB: an msdos or gpt table with an ESP
// and a root partition last, filled with random bytes where the
// filesystems would be.
func testImage(t *testing.T, table string) []byte {
	t.Helper()
	needTool(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "image")
	img := make([]byte, 16<<20)
	rand.NewChaCha8([32]byte{2}).Read(img[1<<20:])
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	script := "label: dos\nstart=2048, size=8192, type=ef\nstart=10240, type=83\n"
	if table == TableGPT {
		script = "label: gpt\nstart=2048, size=8192, type=uefi\nstart=10240, type=linux\n"
	}
	cmd := exec.Command("sfdisk", "-q", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compress(t *testing.T, b []byte, how string) []byte {
	t.Helper()
	var out bytes.Buffer
	switch how {
	case events.DiskCompressionNone:
		return b
	case events.DiskCompressionGzip:
		w := gzip.NewWriter(&out)
		w.Write(b)
		w.Close()
	case events.DiskCompressionZstd:
		w, _ := zstd.NewWriter(&out)
		w.Write(b)
		w.Close()
	}
	return out.Bytes()
}

// deployRack is a rack for a deploy boot: the agent's endpoints (with
// its task) and the image file, served as table says.
type deployRack struct {
	url       string
	file      *fileServer
	mu        sync.Mutex
	published []events.Event
	written   []string
}

func startDeployRack(t *testing.T, task events.DeployTask, file *fileServer) *deployRack {
	t.Helper()
	keys, err := machinecred.New(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	r := &deployRack{file: file}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	task.ImageURL = srv.URL + "/ubuntu/amd64/generic/noble/stable/1/" + task.File.Name
	task.MetadataURL = srv.URL + "/metadata/" + testMachine + "/" + keys.For(testMachine, testDeploy) + "/"
	h, err := agentapi.New(agentapi.Config{RackID: "0190f0e0-0000-7000-8000-0000000000ee",
		Boot: func(id string) (events.BootDecision, bool) {
			return events.BootDecision{MachineID: id, Purpose: events.BootPurposeDeploy, DeploymentID: testDeploy,
				DiskImage: "ubuntu/amd64/generic/noble/stable/1", TargetDisk: "vda"}, id == testMachine
		},
		Check:   keys.Check,
		Publish: func(e events.Event) { r.mu.Lock(); r.published = append(r.published, e); r.mu.Unlock() },
		Task:    func(events.BootDecision) (events.DeployTask, error) { return task, nil },
		Written: func(m, d string) { r.mu.Lock(); r.written = append(r.written, m+" "+d); r.mu.Unlock() },
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"endpoint", "reason"}),
		Logger:  slog.New(slog.DiscardHandler), Rate: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	h.Register(mux)
	mux.Handle("/ubuntu/", file)
	r.url = srv.URL + "/agent/" + testMachine + "/" + keys.For(testMachine, testDeploy)
	return r
}

func (r *deployRack) outcome(t *testing.T) (*events.AgentFinished, []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var fin *events.AgentFinished
	var steps []string
	for _, e := range r.published {
		switch e.Type {
		case events.TypeAgentFinished:
			fin = &events.AgentFinished{}
			if err := json.Unmarshal(e.Data, fin); err != nil {
				t.Fatal(err)
			}
		case events.TypeAgentStepReported:
			var s events.AgentStepReported
			if err := json.Unmarshal(e.Data, &s); err != nil {
				t.Fatal(err)
			}
			steps = append(steps, fmt.Sprintf("%s %s %d", s.Name, s.State, s.Progress))
			if s.Name == "boot-next" {
				steps[len(steps)-1] += " " + s.Message
			}
		}
	}
	return fin, steps
}

// deployRoot is a root with /proc/cmdline, the sysfs of disk vda (a file
// of size bytes) and its device nodes, its partition 2's included.
func deployRoot(t *testing.T, size int64) (root, disk string) {
	t.Helper()
	root = t.TempDir()
	disk = filepath.Join(t.TempDir(), "vda.img")
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/cmdline", "rackplane.purpose=deploy\n")
	write("sys/block/vda/size", fmt.Sprintf("%d\n", size/512))
	write("sys/block/vda/removable", "0\n")
	write("sys/block/vda/ro", "0\n")
	write("sys/block/vda/device/model", "QEMU HARDDISK\n")
	write("dev/vda2", "")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	// Old contents where the image does not reach: the mark must be seen.
	f.Write(bytes.Repeat([]byte{0xa5}, 1<<20))
	f.WriteAt(bytes.Repeat([]byte{0xa5}, 1<<20), size-1<<20)
	f.Close()
	if err := os.Symlink(disk, filepath.Join(root, "dev/vda")); err != nil {
		t.Fatal(err)
	}
	return root, disk
}

// TestDeploy: the agent of a deploy boot writes the rack's image to the
// target disk through broken connections, grows the root partition,
// seeds the installed system and reports the image written; an image
// whose bytes are not its checksum's fails, with the disk marked.
func TestDeploy(t *testing.T) {
	const diskSize = 48 << 20
	for _, tc := range []struct {
		name, table, compression string
		cuts                     int
		corrupt                  bool
		want                     string
	}{
		{"msdos zstd through cuts", TableMSDOS, events.DiskCompressionZstd, 2, false, "disk image written to vda"},
		{"gpt gzip", TableGPT, events.DiskCompressionGzip, 1, false, "disk image written to vda"},
		{"gpt raw", TableGPT, events.DiskCompressionNone, 0, false, "disk image written to vda"},
		{"zstd one byte flipped", TableMSDOS, events.DiskCompressionZstd, 1, true, "checksum mismatch"},
		{"gzip one byte flipped", TableGPT, events.DiskCompressionGzip, 0, true, "checksum mismatch"},
		{"raw one byte flipped", TableGPT, events.DiskCompressionNone, 0, true, "checksum mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testImage(t, tc.table)
			file := compress(t, img, tc.compression)
			served := bytes.Clone(file)
			if tc.corrupt {
				served[len(served)/2] ^= 0x01
			}
			task := events.DeployTask{
				File:       events.ImageFile{Name: "disk.img", SHA256: sum(file), Size: int64(len(file))},
				Disk:       events.DiskImage{File: "disk.img", Compression: tc.compression, Size: int64(len(img)), SHA256: sum(img), Table: tc.table, RootPartition: 2, GrowRoot: true},
				TargetDisk: "vda", InstanceID: testDeploy, Hostname: "node1",
			}
			r := startDeployRack(t, task, &fileServer{body: served, cuts: tc.cuts, cutAt: int64(len(served)) / 3})
			root, disk := deployRoot(t, diskSize)
			seeded := map[string]string{}
			c := newTestClient(t, r.url, root)
			d := &deployer{c: c, log: c.cfg.Logger, devDir: filepath.Join(root, "dev"),
				mount: func(dev, dir string) error {
					if dev != filepath.Join(root, "dev/vda2") {
						return fmt.Errorf("mounted %s, want vda2", dev)
					}
					return nil
				},
				unmount: func(dir string) error {
					for _, p := range []string{SeedMetaData, CloudInitDrop} {
						b, err := os.ReadFile(filepath.Join(dir, p))
						if err != nil {
							return err
						}
						seeded[p] = string(b)
					}
					return os.RemoveAll(dir + "/var") // what the mount held
				},
				rereadTable: func(*os.File) error { return nil },
				stream:      Stream{Attempts: 4, Backoff: time.Millisecond},
				efiVars:     filepath.Join(root, EFIVars),
			}
			// The GPT machines boot UEFI from their network entry
			// Boot0000; the msdos one BIOS.
			if tc.table == TableGPT {
				if err := os.MkdirAll(d.efiVars, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, v := range map[string][]byte{"Boot0000": {9}, "BootOrder": {0, 0}, "BootCurrent": {0, 0}} {
					if err := os.WriteFile(filepath.Join(d.efiVars, name+"-"+efiGlobal), append([]byte{7, 0, 0, 0}, v...), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			err := d.run(context.Background())
			fin, steps := r.outcome(t)
			if fin == nil || fin.Success == tc.corrupt || !strings.Contains(fin.Message, tc.want) {
				t.Fatalf("outcome %+v (run: %v), want success %v saying %q; steps %v", fin, err, !tc.corrupt, tc.want, steps)
			}
			got, rerr := os.ReadFile(disk)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tc.corrupt {
				if err == nil || !strings.Contains(fin.Message, "marked") || len(r.written) != 0 {
					t.Fatalf("run: %v; outcome %q; written %v: want a failure saying the disk was marked, nothing written", err, fin.Message, r.written)
				}
				zero := make([]byte, 1<<20)
				if !bytes.Equal(got[:1<<20], zero) || !bytes.Equal(got[len(got)-1<<20:], zero) {
					t.Fatal("the disk's first and last MiB are not zero after a checksum mismatch")
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if len(r.written) != 1 || r.written[0] != testMachine+" "+testDeploy {
				t.Errorf("written reports %v", r.written)
			}
			// The image past its table is as written; the table grew.
			if !bytes.Equal(got[1<<20:len(img)], img[1<<20:]) {
				t.Error("the disk does not hold the image")
			}
			tab, verify := readTable(t, disk)
			parts := tab.PartitionTable.Partitions
			end := int64(diskSize / 512)
			if tc.table == TableGPT {
				end -= 33
			}
			if len(parts) != 2 || parts[1].Start+parts[1].Size != end {
				t.Errorf("partitions %+v: want the second to end at sector %d\n%s", parts, end, verify)
			}
			meta := seeded[SeedMetaData]
			for _, want := range []string{"instance-id: " + testDeploy + "\n", "local-hostname: node1\n", "seedfrom: http://"} {
				if !strings.Contains(meta, want) {
					t.Errorf("seed meta-data %q lacks %q", meta, want)
				}
			}
			if !strings.Contains(seeded[CloudInitDrop], "NoCloud") {
				t.Errorf("cloud-init setting %q", seeded[CloudInitDrop])
			}
			if !strings.Contains(strings.Join(steps, ","), "write:vda done 100") || !strings.Contains(strings.Join(steps, ","), "verify:vda done 100") {
				t.Errorf("steps %v: want the image written and read back", steps)
			}
			wantNext := "boot-next done 100 no EFI variables (BIOS firmware)"
			if tc.table == TableGPT {
				wantNext = `boot-next done 100 BootNext is Boot0001 rackplane node1 HD(1,GPT,`
				next, err := os.ReadFile(filepath.Join(d.efiVars, "BootNext-"+efiGlobal))
				if err != nil || !bytes.Equal(next, []byte{7, 0, 0, 0, 1, 0}) {
					t.Errorf("BootNext % x (%v), want Boot0001", next, err)
				}
			}
			if !strings.Contains(strings.Join(steps, ","), wantNext) {
				t.Errorf("steps %v: want %q", steps, wantNext)
			}
		})
	}
}

// TestVerifyWritten: what the disk holds is read back and checked, so a
// disk that lost a write fails the deployment though every byte sent to
// it was right.
func TestVerifyWritten(t *testing.T) {
	img := bytes.Repeat([]byte("rackplane disk image "), 100000)
	desc := events.DiskImage{Size: int64(len(img)), SHA256: sum(img)}
	for _, tc := range []struct {
		name    string
		change  func(b []byte) []byte
		wantErr bool
	}{
		{"as written, with a disk larger than the image", func(b []byte) []byte { return append(b, make([]byte, 1<<20)...) }, false},
		{"one byte lost", func(b []byte) []byte { b[len(b)/2] ^= 0x80; return b }, true},
		{"the disk ends early", func(b []byte) []byte { return b[:len(b)-512] }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(path, tc.change(bytes.Clone(img)), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := VerifyWritten(f, desc)
			if (err != nil) != tc.wantErr || tc.wantErr && !errors.Is(err, ErrChecksum) || !tc.wantErr && got != desc.SHA256 {
				t.Fatalf("VerifyWritten: %q, %v; want an error %v", got, err, tc.wantErr)
			}
		})
	}
}

func newTestClient(t *testing.T, url, root string) *client {
	t.Helper()
	cfg := Config{URL: url, Root: root, Attempts: 2, Timeout: 10 * time.Second, Backoff: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	return &client{cfg: cfg, base: url, shown: "test", http: &http.Client{Timeout: cfg.Timeout}}
}
