package api

import (
	"context"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/postgres"
)

// The small views of the region's database the HTTP handlers read and
// write through; *postgres.DB is each of them. Anything that decides more
// than a row goes through a service instead (Machines, Preseeds,
// OSRegistry, RackImages, Volumes).

// Racks lists the racks that joined: those in service, and those retired.
type Racks interface {
	ListRacks(ctx context.Context) ([]rackplane.Rack, error)
	ListRetiredRacks(ctx context.Context) ([]rackplane.Rack, error)
	GetRack(ctx context.Context, id string) (rackplane.Rack, error)
}

// EventLog reads the event log and the messages the region refused.
type EventLog interface {
	ReadEvents(ctx context.Context, after postgres.Cursor, limit int, f postgres.ReadFilter) ([]postgres.Stored, postgres.Cursor, error)
	ReadLastEvents(ctx context.Context, limit int, f postgres.ReadFilter) ([]postgres.Stored, postgres.Cursor, error)
	AwaitSettled(ctx context.Context, max time.Duration) error
	ListRejected(ctx context.Context, limit int) ([]postgres.Rejected, error)
}

// Tokens keeps API tokens.
type Tokens interface {
	Authenticate(ctx context.Context, plain string, now time.Time) (postgres.Token, error)
	CreateToken(ctx context.Context, name, actor, createdBy string, now time.Time) (postgres.Token, string, error)
	ListTokens(ctx context.Context) ([]postgres.Token, error)
	RevokeToken(ctx context.Context, id, by string, now time.Time) (postgres.Token, error)
}

// AuditLog records and lists what was done through the API.
type AuditLog interface {
	Audit(ctx context.Context, e postgres.AuditEntry) error
	ListAudit(ctx context.Context, f postgres.AuditFilter) ([]postgres.AuditEntry, error)
}

// Pinger tells whether the database answers, for /readyz.
type Pinger interface {
	Ping(ctx context.Context) error
}
