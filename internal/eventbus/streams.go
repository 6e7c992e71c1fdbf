package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. It bounds
// how late a republished event (after a crash between commit and publish)
// is still dropped by the server; consumers dedupe by id beyond that.
const DuplicateWindow = 10 * time.Minute

// MaxStreamReplicas is the most copies JetStream keeps of a stream.
const MaxStreamReplicas = 5

// StreamOptions is how this installation keeps the streams.
type StreamOptions struct {
	// MaxAge bounds how long events stay on the streams (Postgres keeps
	// them for good).
	MaxAge time.Duration
	// Replicas is how many servers of a JetStream cluster hold each
	// stream: 1 on a single server, 3 in a three-node cluster, so that
	// one server may fail without losing or stopping the streams. The
	// region's durable consumers leave their own replica count unset and
	// so follow the stream's.
	Replicas int
}

// StreamConfigs returns the stream configurations. The names and subjects
// are the contract's (package events); the rest is how this installation
// keeps them.
func StreamConfigs(o StreamOptions) []jetstream.StreamConfig {
	replicas := max(o.Replicas, 1)
	return []jetstream.StreamConfig{
		{
			Name:        events.RackStream,
			Description: "events published by racks",
			Subjects:    []string{events.RackEventsWildcard},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      o.MaxAge,
			Duplicates:  DuplicateWindow,
			Replicas:    replicas,
		},
		{
			Name:        events.RegionStream,
			Description: "events published by the region",
			Subjects:    []string{events.RegionEventsWildcard, events.RegionRackEventsWildcard},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      o.MaxAge,
			Duplicates:  DuplicateWindow,
			Replicas:    replicas,
		},
	}
}

// EnsureStreams creates the streams on a single server (one replica) or
// updates them to the current configuration; tests and `rackplane dev`
// use it. EnsureReplicatedStreams is the general form.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, maxAge time.Duration) error {
	return EnsureReplicatedStreams(ctx, js, StreamOptions{MaxAge: maxAge, Replicas: 1})
}

// EnsureReplicatedStreams creates the streams or updates existing ones to
// o, their replica count included: JetStream moves a stream from one to
// three replicas (or back) in place, without losing messages. The region
// owns the streams and creates them at start; a rack that starts first
// keeps its events buffered until they exist.
//
// A replica count the server cannot hold returns an *rackplane.Error with
// code EINVALID when retrying cannot help (the server is not clustered),
// and EUNAVAILABLE when it may (the cluster has too few servers up, or is
// still forming).
func EnsureReplicatedStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	if o.Replicas < 1 || o.Replicas > MaxStreamReplicas {
		return rackplane.Errorf(rackplane.EINVALID, "stream replicas %d: want 1 to %d", o.Replicas, MaxStreamReplicas)
	}
	nc := js.Conn()
	if o.Replicas > 1 && nc.IsConnected() && nc.ConnectedClusterName() == "" {
		return rackplane.Errorf(rackplane.EINVALID,
			"stream replicas %d: the NATS server %s is not part of a cluster (no cluster block in its configuration), so it can hold only 1 replica; set the replicas to 1 or run a JetStream cluster of at least %d servers",
			o.Replicas, nc.ConnectedServerName(), o.Replicas)
	}
	for _, cfg := range StreamConfigs(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return replicaError(cfg, err)
		}
	}
	return nil
}

// Error codes of the JetStream API (nats-server's errors.json) that
// nats.go does not name.
const (
	errCodeClusterNoPeers        jetstream.ErrorCode = 10005 // no servers to place the replicas on
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeReplicasNotSupported  jetstream.ErrorCode = 10074 // replicas > 1 on a server without a cluster
)

// replicaError names the replica count when that is what the server
// refused, and says whether waiting can help.
func replicaError(cfg jetstream.StreamConfig, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeReplicasNotSupported:
			return rackplane.WrapError(rackplane.EINVALID, err,
				"stream %s with %d replicas: the NATS server is not clustered; set the replicas to 1 or run a JetStream cluster", cfg.Name, cfg.Replicas)
		case errCodeInsufficientResources, errCodeClusterNoPeers:
			return rackplane.WrapError(rackplane.EUNAVAILABLE, err,
				"stream %s with %d replicas: the JetStream cluster has fewer than %d servers with JetStream up (or not enough storage)", cfg.Name, cfg.Replicas, cfg.Replicas)
		}
	}
	return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
}
