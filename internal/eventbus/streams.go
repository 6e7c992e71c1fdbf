package eventbus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. It bounds
// how late a republished event (after a crash between commit and publish)
// is still dropped by the server; consumers dedupe by id beyond that.
const DuplicateWindow = 10 * time.Minute

// StreamConfigs returns the stream configurations; maxAge bounds how long
// events stay on the streams (Postgres keeps them for good). The names and
// subjects are the contract's (package events); the rest is how this
// installation keeps them.
func StreamConfigs(maxAge time.Duration) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        events.RackStream,
			Description: "events published by racks",
			Subjects:    []string{events.RackEventsWildcard},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      maxAge,
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        events.RegionStream,
			Description: "events published by the region",
			Subjects:    []string{events.RegionEventsWildcard},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      maxAge,
			Duplicates:  DuplicateWindow,
		},
	}
}

// EnsureStreams creates the streams or updates them to the current
// configuration. The region owns the streams and creates them at start; a
// rack that starts first keeps its events buffered until they exist.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, maxAge time.Duration) error {
	for _, cfg := range StreamConfigs(maxAge) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
