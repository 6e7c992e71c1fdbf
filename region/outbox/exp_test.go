package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/regiontest"
)

func TestExpRejected(t *testing.T) {
	s := newSite(t)
	s.start(500)
	s.emit(2, false)
	s.relayed(2)
	s.drained()
	ctx := context.Background()
	st, err := s.js.Stream(ctx, events.RegionStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 2
	cfg.Discard = jetstream.DiscardNew
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s.emit(2, false)
	time.Sleep(3 * time.Second)
	n, _ := s.db.OutboxLength(ctx)
	t.Logf("outbox %d gauge %v", n, s.pending())
	regiontest.Eventually(t, 10*time.Second, "x", func() error {
		if s.pending() != 2 {
			return fmt.Errorf("pending %v", s.pending())
		}
		return nil
	})
}
