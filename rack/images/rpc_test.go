package images

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

func TestRPC(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepNewest = 1; c.InFlightWindow = time.Minute })
	ns := natsserver.StartTest(t)
	serverConn := ns.Connect()
	srv := rpc.NewServer(serverConn, testRackID, testLogger(t), 8, 10*time.Second)
	t.Cleanup(srv.Close)
	if err := e.s.RegisterRPC(srv, testRackID); err != nil {
		t.Fatal(err)
	}
	// Subscriptions reach the NATS server asynchronously.
	if err := serverConn.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := e.s.RegisterRPC(srv, "0195a3f0-0000-7000-8000-000000000000"); !isCode(err, rackplane.EINVALID) {
		t.Fatalf("registering for another rack: %v", err)
	}
	nc := ns.Connect()
	ctx := context.Background()
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	// call checks every successful result against the method's reply
	// schema before decoding it.
	call := func(method string, req, out any) error {
		var raw json.RawMessage
		if err := rpc.Call(ctx, nc, events.RackRPCSubject(testRackID, method), req, &raw); err != nil {
			return err
		}
		if err := set.ValidateJSON(ReplySchema(method), raw); err != nil {
			t.Fatalf("%s reply breaks its schema: %v\n%s", method, err, raw)
		}
		if out == nil {
			return nil
		}
		return json.Unmarshal(raw, out)
	}

	v1, f1 := imageVersion("20261101", map[string][]byte{"linux": content("a", 1000)})
	v2, f2 := imageVersion("20261102", map[string][]byte{"linux": content("b", 1000)})
	ss := newSourceServer(t, v1, v2)
	ss.addFiles(f1)
	ss.addFiles(f2)

	var started ImportStatus
	if err := call(events.MethodImagesImport, Source{URL: ss.url()}, &started); err != nil || started.ID == "" {
		t.Fatalf("import: %+v %v", started, err)
	}
	var imports ImportsReply
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := call(events.MethodImagesImports, ImportsRequest{ID: started.ID}, &imports); err != nil {
			t.Fatal(err)
		}
		if imports.Imports[0].State != ImportRunning || time.Now().After(deadline) {
			break
		}
	}
	if st := imports.Imports[0]; st.State != ImportSucceeded || st.BytesDone != 2000 || st.BytesTotal != 2000 {
		t.Fatalf("import status %+v", st)
	}
	err = call(events.MethodImagesImports, ImportsRequest{ID: "nope"}, &imports)
	wantCode(t, err, rackplane.ENOTFOUND)

	e.s.SetReferences("machine/m1", v1.ID())
	var list ListReply
	if err := call(events.MethodImagesList, nil, &list); err != nil || len(list.Versions) != 2 {
		t.Fatalf("list %+v %v", list, err)
	}
	if l := list.Versions[0]; l.ID != v1.ID() || l.Size != 1000 || !l.Usable || len(l.References) != 1 || l.References[0] != "machine/m1" {
		t.Fatalf("listed %+v", l)
	}

	err = call(events.MethodImagesDelete, DeleteRequest{VersionID: v1.ID()}, nil)
	wantCode(t, err, rackplane.ECONFLICT)
	err = call(events.MethodImagesDelete, DeleteRequest{}, nil)
	wantCode(t, err, rackplane.EINVALID)
	err = call(events.MethodImagesGC, json.RawMessage(`{"dryrun":true}`), nil)
	wantCode(t, err, rackplane.EINVALID) // misspelt option
	err = call(events.MethodImagesImport, Source{URL: "file:///etc"}, nil)
	wantCode(t, err, rackplane.EINVALID)

	e.clock.Advance(time.Hour)
	e.s.SetReferences("machine/m1")
	var gc GCReport
	if err := call(events.MethodImagesGC, GCRequest{DryRun: true}, &gc); err != nil || len(gc.Versions) != 1 || gc.Versions[0] != v1.ID() || !gc.DryRun {
		t.Fatalf("gc dry run %+v %v", gc, err)
	}
	if err := call(events.MethodImagesGC, GCRequest{}, &gc); err != nil || len(gc.Versions) != 1 || gc.BytesFreed != 1000 {
		t.Fatalf("gc %+v %v", gc, err)
	}
	var scrub ScrubReport
	if err := call(events.MethodImagesScrub, struct{}{}, &scrub); err != nil || scrub.Checked != 1 || len(scrub.Corrupt) != 0 {
		t.Fatalf("scrub %+v %v", scrub, err)
	}
	if err := call(events.MethodImagesDelete, DeleteRequest{VersionID: v2.ID()}, &gc); err != nil || gc.Versions[0] != v2.ID() {
		t.Fatalf("delete %+v %v", gc, err)
	}
	if err := call(events.MethodImagesList, struct{}{}, &list); err != nil || len(list.Versions) != 0 {
		t.Fatalf("list after delete %+v %v", list, err)
	}
}

// TestEveryEventTypeValidates drives the store through every event it
// emits; the recorder validates each against its schema on arrival.
func TestEveryEventTypeValidates(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepNewest = 1 })
	v1, f1 := imageVersion("1", map[string][]byte{"linux": content("1", 10), "initrd": content("i", 10)})
	v2, f2 := imageVersion("2", map[string][]byte{"linux": content("2", 10), "initrd": content("i", 10)})
	bl := SourceVersion{Kind: KindBootloader, Bootloader: "ipxe", Arch: "amd64", Version: "1.0.0_git+20190125.36a4c85-5.1",
		Files: []SourceFile{{Name: "undionly.kpxe", SHA256: sum(content("u", 10)), Size: 10}}}
	ss := newSourceServer(t, v1, v2, bl)
	ss.addFiles(f1)
	ss.addFiles(f2)
	ss.addFiles(map[string][]byte{"undionly.kpxe": content("u", 10)})
	e.importURL(ss.url())
	e.s.Import(context.Background(), Source{URL: ss.srv.URL + "/missing/manifest.json"})
	flipByte(t, e.s.blobPath(sum(content("i", 10))))
	e.s.Scrub(context.Background())
	e.clock.Advance(2 * time.Hour)
	e.s.GC(context.Background(), false)

	for _, typ := range []string{events.TypeImageImported, events.TypeImageImportFailed, events.TypeImageCorrupt,
		events.TypeImageRemoved, events.TypeImageBlobRemoved} {
		evs := e.rec.ofType(typ)
		if len(evs) == 0 {
			t.Errorf("no %s event emitted", typ)
		}
		for _, ev := range evs {
			if ev.Source != events.RackSource(testRackID) {
				t.Errorf("%s has source %s", typ, ev.Source)
			}
		}
	}
}
