package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names. The region owns the streams and creates them at start; a
// rack that starts first keeps its events buffered until they exist.
const (
	RackStream   = "RACKPLANE_RACK_EVENTS"
	RegionStream = "RACKPLANE_REGION_EVENTS"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. It bounds
// how late a republished event (after a crash between commit and publish)
// is still dropped by the server; consumers dedupe by id beyond that.
const DuplicateWindow = 10 * time.Minute

// StreamConfigs returns the stream configurations; maxAge bounds how long
// events stay on the streams (Postgres keeps them for good).
func StreamConfigs(maxAge time.Duration) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        RackStream,
			Description: "events published by racks",
			Subjects:    []string{RackEventsWildcard},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      maxAge,
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        RegionStream,
			Description: "events published by the region",
			Subjects:    []string{RegionEventsWildcard},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      maxAge,
			Duplicates:  DuplicateWindow,
		},
	}
}

// EnsureStreams creates the streams or updates them to the current
// configuration.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, maxAge time.Duration) error {
	for _, cfg := range StreamConfigs(maxAge) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// SubjectFor returns the subject an event is published on, derived from its
// source and type.
func SubjectFor(e Event) (string, error) {
	if e.Source == RegionSource {
		return RegionEventSubject(e.Type), nil
	}
	if id := RackIDFromSource(e.Source); id != "" {
		return RackEventSubject(id, e.Type), nil
	}
	return "", errors.New("event source is neither region nor rack")
}
