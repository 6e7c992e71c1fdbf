package rpc_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
)

func TestCallAndGather(t *testing.T) {
	ns := natsserver.StartTest(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, name := range []string{"a", "b", "slow"} {
		srv := rpc.NewServer(ns.Connect(), name, log, 4, time.Second)
		t.Cleanup(srv.Close)
		h := func(ctx context.Context, data []byte) (any, error) {
			switch string(data) {
			case `"fail"`:
				return nil, rackplane.Errorf(rackplane.ENOTFOUND, "no such thing")
			case `"panic"`:
				panic("boom")
			case `"raw"`:
				return json.RawMessage(`{"cached":true}`), nil
			}
			if name == "slow" {
				time.Sleep(500 * time.Millisecond)
			}
			return map[string]string{"name": name}, nil
		}
		if err := srv.Handle("test.one."+name, "", h); err != nil {
			t.Fatal(err)
		}
	}
	nc := ns.Connect()
	ctx := context.Background()

	tests := []struct {
		subject, req string
		want         string
		code         string
	}{
		{"test.one.a", "hello", `{"name":"a"}`, ""},
		{"test.one.a", "raw", `{"cached":true}`, ""},
		{"test.one.a", "fail", "", rackplane.ENOTFOUND},
		{"test.one.a", "panic", "", rackplane.EINTERNAL},
		{"test.one.nobody", "hello", "", rackplane.EUNAVAILABLE},
	}
	for _, tt := range tests {
		t.Run(tt.subject+" "+tt.req, func(t *testing.T) {
			var out json.RawMessage
			err := rpc.Call(ctx, nc, tt.subject, tt.req, &out)
			if tt.code != "" {
				if rackplane.ErrorCode(err) != tt.code {
					t.Fatalf("err %v, want code %s", err, tt.code)
				}
				if tt.code == rackplane.EINTERNAL && rackplane.ErrorMessage(err) != "internal error" {
					t.Fatalf("internal details sent to the caller: %q", rackplane.ErrorMessage(err))
				}
				return
			}
			if err != nil || string(out) != tt.want {
				t.Fatalf("got %s, %v; want %s", out, err, tt.want)
			}
		})
	}

	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	var out json.RawMessage
	if err := rpc.Call(tctx, nc, "test.one.slow", "x", &out); rackplane.ErrorCode(err) != rackplane.ETIMEOUT {
		t.Fatalf("slow call: %v, want timeout", err)
	}

	// Scatter-gather: never waits past the deadline, names who answered.
	gctx, gcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer gcancel()
	start := time.Now()
	each := map[string]string{"a": "test.one.a", "b": "test.one.b", "slow": "test.one.slow"}
	g, err := rpc.Gather(gctx, nc, each, "x")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 300*time.Millisecond || g.Complete || len(g.Replies) != 2 {
		t.Fatalf("gather: %s, complete=%v, %d replies", took, g.Complete, len(g.Replies))
	}
	// Without the slow one, it returns as soon as both answered.
	start = time.Now()
	g, _ = rpc.Gather(ctx, nc, map[string]string{"a": "test.one.a", "b": "test.one.b"}, "x")
	if !g.Complete || time.Since(start) > 150*time.Millisecond {
		t.Fatalf("gather of the fast ones: complete=%v after %s", g.Complete, time.Since(start))
	}

	// A reply is its responder's by the request it answers, not by the
	// name in its body: "liar" answers what was sent to it claiming to be
	// "a", and is still counted as "liar".
	liar := ns.Connect()
	if _, err := liar.Subscribe("test.one.liar", func(m *nats.Msg) { _ = m.Respond([]byte(`{"from":"a","result":{"name":"a"}}`)) }); err != nil {
		t.Fatal(err)
	}
	if err := liar.Flush(); err != nil {
		t.Fatal(err)
	}
	g, _ = rpc.Gather(ctx, nc, map[string]string{"liar": "test.one.liar"}, "x")
	if !g.Complete || len(g.Replies) != 1 || g.Replies[0].From != "liar" {
		t.Fatalf("gather: a reply counted by its body's name: %+v", g.Replies)
	}
}
