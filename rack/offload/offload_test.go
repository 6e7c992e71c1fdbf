package offload_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/offload"
	"github.com/rackplane/rackplane/schema"
)

var decision = events.BootDecision{MAC: "52:54:00:12:34:56", MachineID: "m-1", Purpose: events.BootPurposeInstall,
	Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", Params: []string{"token=o-525400123456"}}

// clock is a settable clock for TTLs.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	tr    *handofftest.Tree
	store *offload.Store
	off   *offload.Offload
	clk   *clock
	dir   string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clk: &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	f.tr = handofftest.Build(t, handofftest.Decisions{decision.MAC: decision}, bootconfig.RenderConfig{})
	f.dir = filepath.Join(f.tr.Dir, "handoff-store")
	log := slog.New(slog.DiscardHandler)
	var err error
	f.store, err = offload.NewStore(offload.StoreConfig{Dir: f.dir, TTL: time.Minute, Now: f.clk.Now}, f.tr.Resolver, log)
	if err != nil {
		t.Fatal(err)
	}
	f.off, err = offload.New(f.tr.Resolver, f.store, log)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) socket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(f.tr.Dir, "tftp-offload.sock")
	srv, err := offload.NewSocketServer(offload.SocketConfig{Path: path}, f.off, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	return path
}

// ask speaks the MAAS offload protocol: it writes the request in pieces,
// as a stream may deliver it, and reads until the rack closes.
func ask(t *testing.T, sock string, pieces ...string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range pieces {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.(*net.UnixConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func deletions(f *fixture, reason string) []events.HandoffFileDeleted {
	var out []events.HandoffFileDeleted
	for _, e := range f.tr.Recorder.Events(events.TypeHandoffFileDeleted) {
		var d events.HandoffFileDeleted
		if e.DecodeData(&d) == nil && d.Reason == reason {
			out = append(out, d)
		}
	}
	return out
}

func TestSocketProtocol(t *testing.T) {
	f := setup(t)
	sock := f.socket(t)

	// A static file: its real path, not ephemeral.
	got := ask(t, sock, "10.0.0.1\x00", "10.0.0.99\x00pxelinux.0\x00", "$")
	want := "-\x00-\x00" + filepath.Join(f.tr.Root, "pxelinux.0") + "\x00$"
	if got != want {
		t.Fatalf("static: got %q, want %q", got, want)
	}
	// A symlink inside the root is named by its target.
	if got := ask(t, sock, "10.0.0.1\x0010.0.0.99\x00inside-link\x00$"); got != want {
		t.Fatalf("inside symlink: got %q, want %q", got, want)
	}
	// A versioned file.
	got = ask(t, sock, "10.0.0.1\x0010.0.0.99\x00/images/debian/v1/linux\x00$")
	if got != "-\x00-\x00"+filepath.Join(f.tr.Store, "images/debian/v1/linux")+"\x00$" {
		t.Fatalf("versioned: got %q", got)
	}

	// A dynamic config: an ephemeral file the front-end deletes.
	got = ask(t, sock, "10.0.0.1\x0010.0.0.99\x00pxelinux.cfg/01-52-54-00-12-34-56\x00$")
	path, ok := strings.CutPrefix(got, "-\x00EPH\x00")
	if !ok || !strings.HasSuffix(path, "\x00$") {
		t.Fatalf("dynamic: got %q", got)
	}
	path = strings.TrimSuffix(path, "\x00$")
	if filepath.Dir(path) != f.dir {
		t.Fatalf("ephemeral file %s outside the store %s", path, f.dir)
	}
	content, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(content), "token=o-525400123456") {
		t.Fatalf("ephemeral file: %v %q", err, content)
	}
	os.Remove(path) // the front-end's part of the protocol
	f.store.Expire()
	if d := deletions(f, events.HandoffDeletedGone); len(d) != 1 || d[0].Path != path {
		t.Fatalf("gone events: %+v", d)
	}

	// One the front-end forgets: deleted at its TTL, not before.
	got = ask(t, sock, "10.0.0.1\x0010.0.0.99\x00ipxe/52-54-00-12-34-56.ipxe\x00$")
	path = strings.TrimSuffix(strings.TrimPrefix(got, "-\x00EPH\x00"), "\x00$")
	f.clk.Add(59 * time.Second)
	f.store.Expire()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("deleted before its TTL: %v", err)
	}
	f.clk.Add(time.Second)
	f.store.Expire()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("outlived its TTL: %v", err)
	}
	if d := deletions(f, events.HandoffDeletedTTL); len(d) != 1 || d[0].Path != path || d[0].AgeMS != 60000 {
		t.Fatalf("ttl events: %+v", d)
	}

	// Addresses are the front-end's to fill; nonsense in them is only
	// reported, and the events stay within their schema.
	if got := ask(t, sock, strings.Repeat("L", 1500)+"\x00\xff\x01\x00pxelinux.0\x00$"); got != want {
		t.Fatalf("odd addresses: %q", got)
	}

	// Errors, with TFTP error codes.
	errs := []struct{ name, want string }{
		{"missing", "1\x00file not found\x00$"},
		{"../../etc/passwd", "2\x00access violation\x00$"},
		{"escape", "2\x00access violation\x00$"},
	}
	for _, e := range errs {
		if got := ask(t, sock, "10.0.0.1\x0010.0.0.99\x00"+e.name+"\x00$"); got != e.want {
			t.Errorf("%s: got %q, want %q", e.name, got, e.want)
		}
	}

	// Broken messages: dropped with the connection, and reported.
	for _, m := range []string{"10.0.0.1\x0010.0.0.99\x00pxelinux.0\x00X", "10.0.0.1\x0010.0.0.99\x00pxelinux.0\x00$\x00more", "only\x00two\x00"} {
		if got := ask(t, sock, m); got != "" {
			t.Errorf("broken message %q answered %q", m, got)
		}
	}
	if n := len(f.tr.Recorder.Events(events.TypeBootRequestRejected)); n != 3 {
		t.Errorf("%d rejection events for 3 broken messages", n)
	}
	// Still serving.
	if got := ask(t, sock, "10.0.0.1\x0010.0.0.99\x00pxelinux.0\x00$"); got != want {
		t.Fatalf("after broken messages: %q", got)
	}
}

func TestStoreSweepsAtStart(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "left-over"), []byte("x"), 0o644)
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	if _, err := offload.NewStore(offload.StoreConfig{Dir: dir}, tr.Resolver, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "left-over")); !os.IsNotExist(err) {
		t.Fatalf("left-over file survived the sweep: %v", err)
	}
	evs := tr.Recorder.Events(events.TypeHandoffFileDeleted)
	var d events.HandoffFileDeleted
	if len(evs) != 1 || evs[0].DecodeData(&d) != nil || d.Reason != events.HandoffDeletedSweep {
		t.Fatalf("sweep events: %v", evs)
	}
}

// TestRPC is the hand-off over NATS: the front-end asks on the rack's rpc
// subject and reports completion with a boot_transfer event.
func TestRPC(t *testing.T) {
	f := setup(t)
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	log := slog.New(slog.DiscardHandler)
	srv := rpc.NewServer(nc, handofftest.RackID, log, 8, 5*time.Second)
	defer srv.Close()
	if err := f.off.HandleRPC(srv, handofftest.RackID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.off.Completions(ctx, nc, handofftest.RackID)
	subject := events.RackRPCSubject(handofftest.RackID, offload.RPCMethod)

	var raw json.RawMessage
	if err := rpc.Call(ctx, nc, subject, offload.RPCRequest{Remote: "10.0.0.99:2000", FileName: "grub/grub.cfg-52:54:00:12:34:56"}, &raw); err != nil {
		t.Fatal(err)
	}
	set, _ := schema.Default()
	if err := set.ValidateJSON(offload.RPCReplySchema, raw); err != nil {
		t.Fatalf("answer breaks its schema: %v: %s", err, raw)
	}
	var a offload.Answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	if !a.Ephemeral || a.MachineID != "m-1" || a.Route != "config" {
		t.Fatalf("answer %+v", a)
	}
	if b, err := os.ReadFile(a.Path); err != nil || !strings.Contains(string(b), "token=o-525400123456") {
		t.Fatalf("ephemeral file: %v %q", err, b)
	}
	nc.Flush()
	// The front-end's report.
	ev, err := events.New(events.RackSource(handofftest.RackID), events.TypeBootTransfer, "machine/m-1", time.Now(), events.BootTransfer{
		Protocol: events.BootProtocolOffloadRPC, Remote: "10.0.0.99:2000", FileName: "grub/grub.cfg-52:54:00:12:34:56",
		Route: "config", Bytes: a.Size, Size: a.Size, DurationMS: 3, BlockSize: 1468, HandoffID: a.HandoffID,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := eventbus.Message(ev)
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.store.Has(a.HandoffID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(a.Path); !os.IsNotExist(err) {
		t.Fatalf("ephemeral file not deleted after the transfer report: %v", err)
	}
	// The file goes before its handoff_file_deleted event is published.
	d := deletions(f, events.HandoffDeletedDone)
	for len(d) == 0 && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(10 * time.Millisecond)
		d = deletions(f, events.HandoffDeletedDone)
	}
	if len(d) != 1 || d[0].HandoffID != a.HandoffID {
		t.Fatalf("done events: %+v", d)
	}

	// A static file, and a refusal.
	if err := rpc.Call(ctx, nc, subject, offload.RPCRequest{FileName: "pxelinux.0"}, &a); err != nil || a.Ephemeral || a.Path != filepath.Join(f.tr.Root, "pxelinux.0") {
		t.Fatalf("static: %+v %v", a, err)
	}
	if err := rpc.Call(ctx, nc, subject, map[string]any{"file_name": 7}, &a); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Fatalf("malformed request: %v", err)
	}
	err = rpc.Call(ctx, nc, subject, offload.RPCRequest{FileName: "../../etc/passwd"}, &a)
	if rackplane.ErrorCode(err) != rackplane.EFORBIDDEN || rackplane.ErrorMessage(err) != "access violation" {
		t.Fatalf("hostile: %v", err)
	}
}

// TestCompletionsListenOnlyWhileAwaited: the rack's own boot_transfer
// events go out on the subject of the front-ends' reports, so Completions
// listens there only while a file handed out over NATS waits for its
// report, and drops the rack's own events unread.
func TestCompletionsListenOnlyWhileAwaited(t *testing.T) {
	defer offload.SetReportsIdle(50 * time.Millisecond)()
	f := setup(t)
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	srv := rpc.NewServer(nc, handofftest.RackID, slog.New(slog.DiscardHandler), 8, 5*time.Second)
	defer srv.Close()
	if err := f.off.HandleRPC(srv, handofftest.RackID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.off.Completions(ctx, nc, handofftest.RackID) }()
	reports := events.RackEventSubject(handofftest.RackID, events.TypeBootTransfer)
	listening := func() bool { return ns.Server.GlobalAccount().SubscriptionInterest(reports) }
	waitFor := func(want bool, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for listening() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: listening %v", what, !want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if listening() {
		t.Fatal("Completions listens with no report awaited")
	}
	// A static file awaits no report either.
	var a offload.Answer
	subject := events.RackRPCSubject(handofftest.RackID, offload.RPCMethod)
	if err := rpc.Call(ctx, nc, subject, offload.RPCRequest{FileName: "pxelinux.0"}, &a); err != nil || a.Ephemeral {
		t.Fatalf("static: %+v %v", a, err)
	}
	if listening() {
		t.Fatal("Completions listens after a static file")
	}
	// A config does, from before the answer.
	if err := rpc.Call(ctx, nc, subject, offload.RPCRequest{Remote: "10.0.0.99:2000", FileName: "grub/grub.cfg-52:54:00:12:34:56"}, &a); err != nil || !a.Ephemeral {
		t.Fatalf("config: %+v %v", a, err)
	}
	if !listening() {
		t.Fatal("a config's answer came before Completions listened for its report")
	}
	publish := func(id string) {
		t.Helper()
		ev, err := events.New(events.RackSource(handofftest.RackID), events.TypeBootTransfer, "machine/m-1", time.Now(), events.BootTransfer{
			Protocol: events.BootProtocolHTTP, Remote: "10.0.0.99:2000", FileName: "x", Route: "root", HandoffID: id,
		})
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := eventbus.Message(ev)
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	// The rack's own transfer (another hand-off id) releases nothing.
	publish("0193a0f0-0000-7000-8000-000000000000")
	nc.Flush()
	time.Sleep(100 * time.Millisecond)
	if !f.store.Has(a.HandoffID) || !listening() {
		t.Fatal("a transfer of another hand-off released the config or ended the listening")
	}
	publish(a.HandoffID)
	waitFor(false, "after the last awaited report")
	if f.store.Has(a.HandoffID) {
		t.Fatal("the reported file is still in the store")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
