package eventbus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestStreamReplicasOnOneServer: a single server holds one replica; asking
// it for more fails at once with an error that says why and what to do,
// not with JetStream's code.
func TestStreamReplicasOnOneServer(t *testing.T) {
	tests := []struct {
		replicas int
		code     string // "" for success
		says     string
	}{
		{1, "", ""},
		{3, rackplane.EINVALID, "not part of a cluster"},
		{0, rackplane.EINVALID, "want 1 to 5"},
		{6, rackplane.EINVALID, "want 1 to 5"},
	}
	ns := natsserver.StartTest(t)
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.replicas), func(t *testing.T) {
			err := eventbus.EnsureReplicatedStreams(context.Background(), js, eventbus.StreamOptions{MaxAge: time.Hour, Replicas: tt.replicas})
			if got := rackplane.ErrorCode(err); got != tt.code || err != nil && !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("EnsureReplicatedStreams: %v (code %q), want code %q saying %q", err, got, tt.code, tt.says)
			}
		})
	}
}

// TestStreamReplicasInACluster: on a three-node cluster the streams are
// created with the replicas asked for, moved from one to three replicas in
// place when the setting changes, with the messages and the region's
// durable consumer (which leaves its replicas unset) following; more
// replicas than servers is refused as a cluster too small.
func TestStreamReplicasInACluster(t *testing.T) {
	ctx := context.Background()
	c := natsserver.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ensure := func(replicas int) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return eventbus.EnsureReplicatedStreams(cctx, js, eventbus.StreamOptions{MaxAge: time.Hour, Replicas: replicas})
	}
	if err := ensure(1); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := js.Publish(ctx, events.RackEventSubject(fmt.Sprint("r", i), events.TypeRackRegistered), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.RackStream, jetstream.ConsumerConfig{Durable: "region-ingest", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	replicasOf := func() (stream, consumer int, msgs uint64, err error) {
		st, err := js.Stream(ctx, events.RackStream)
		if err != nil {
			return 0, 0, 0, err
		}
		si := st.CachedInfo()
		ci, err := cons.Info(ctx)
		if err != nil {
			return 0, 0, 0, err
		}
		return placed(si.Cluster), placed(ci.Cluster), si.State.Msgs, nil
	}
	if s, cn, _, err := replicasOf(); err != nil || s != 1 || cn != 1 {
		t.Fatalf("at R1: stream on %d servers, consumer on %d (%v), want 1 and 1", s, cn, err)
	}

	if err := ensure(3); err != nil {
		t.Fatal(err)
	}
	regiontest.Eventually(t, 20*time.Second, "the stream and its consumer on three servers", func() error {
		s, cn, msgs, err := replicasOf()
		if err == nil && (s != 3 || cn != 3 || msgs != 5) {
			err = fmt.Errorf("stream on %d servers with %d messages, consumer on %d; want 3, 5, 3", s, msgs, cn)
		}
		return err
	})

	err = ensure(5)
	if rackplane.ErrorCode(err) != rackplane.EUNAVAILABLE || !strings.Contains(err.Error(), "fewer than 5 servers") {
		t.Fatalf("R5 on three servers: %v, want unavailable: fewer than 5 servers", err)
	}
}

// placed is on how many servers a stream or consumer is: its leader and
// its other replicas.
func placed(ci *jetstream.ClusterInfo) int {
	if ci == nil || ci.Leader == "" {
		return 0
	}
	return 1 + len(ci.Replicas)
}
