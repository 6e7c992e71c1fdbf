package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

var preseedsProjection = Projection{
	Name:   "preseeds",
	Tables: []string{"preseed_versions", "preseeds"},
	Apply:  applyPreseed,
}

func applyPreseed(q *pgx.Batch, s Stored) error {
	if s.Type != events.TypePreseedVersionCreated {
		return nil
	}
	var d events.PreseedVersionCreated
	if err := s.DecodeData(&d); err != nil {
		return err
	}
	var machine *string
	if d.Scope.MachineID != "" {
		machine = &d.Scope.MachineID
	}
	var basedOn *int64
	if d.BasedOn > 0 {
		basedOn = &d.BasedOn
	}
	format := d.Format
	if format == "" {
		format = events.DetectPreseedFormat(d.Content) // saved before formats
	}
	q.Queue(`INSERT INTO preseed_versions (name, version, content, origin, author, comment, based_on, created_at, event_id, format)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, d.Name, d.Version, d.Content, d.Origin, d.Author, d.Comment, basedOn, s.Time, s.ID, format)
	q.Queue(`INSERT INTO preseeds (name, scope_kind, scope_machine, scope_os, scope_release, scope_arch, current_version, latest_version, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)
		ON CONFLICT (name) DO UPDATE SET scope_kind = excluded.scope_kind, scope_machine = excluded.scope_machine,
			scope_os = excluded.scope_os, scope_release = excluded.scope_release, scope_arch = excluded.scope_arch,
			latest_version = excluded.latest_version, updated_at = excluded.updated_at,
			current_version = CASE WHEN $9 THEN excluded.current_version ELSE preseeds.current_version END`,
		d.Name, d.Scope.Kind, machine, d.Scope.OS, d.Scope.Release, d.Scope.Arch, d.Version, s.Time, d.Current)
	return nil
}

// Preseed is a named preseed with its current version.
type Preseed struct {
	Name           string              `json:"name"`
	Scope          events.PreseedScope `json:"scope"`
	CurrentVersion int64               `json:"current_version"`
	LatestVersion  int64               `json:"latest_version"`
	UpdatedAt      time.Time           `json:"updated_at"`
}

// PreseedVersion is one immutable version.
type PreseedVersion struct {
	Name      string    `json:"name"`
	Version   int64     `json:"version"`
	Content   string    `json:"content,omitempty"`
	Origin    string    `json:"origin"`
	Author    string    `json:"author"`
	Comment   string    `json:"comment,omitempty"`
	BasedOn   *int64    `json:"based_on,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Format is the version's format (events.PreseedFormat*).
	Format string `json:"format"`
}

// versionFormat is the format of a stored version: its column, or, for a
// row projected before the column (empty), the format its content is
// detected as.
func versionFormat(format, content string) string {
	if format == "" {
		return events.DetectPreseedFormat(content)
	}
	return format
}

const selectPreseed = `SELECT name, scope_kind, coalesce(scope_machine::text, ''), scope_os, scope_release, scope_arch,
	current_version, latest_version, updated_at FROM preseeds`

func scanPreseed(row pgx.CollectableRow) (Preseed, error) {
	var p Preseed
	err := row.Scan(&p.Name, &p.Scope.Kind, &p.Scope.MachineID, &p.Scope.OS, &p.Scope.Release, &p.Scope.Arch,
		&p.CurrentVersion, &p.LatestVersion, &p.UpdatedAt)
	return p, err
}

// ListPreseeds returns every preseed by name.
func (db *DB) ListPreseeds(ctx context.Context) ([]Preseed, error) {
	rows, err := db.pool.Query(ctx, selectPreseed+` ORDER BY name`)
	if err != nil {
		return nil, wrap("list preseeds", err)
	}
	out, err := pgx.CollectRows(rows, scanPreseed)
	return out, wrap("list preseeds", err)
}

// GetPreseed returns a preseed; ENOTFOUND when there is none.
func (db *DB) GetPreseed(ctx context.Context, name string) (Preseed, error) {
	rows, err := db.pool.Query(ctx, selectPreseed+` WHERE name = $1`, name)
	if err != nil {
		return Preseed{}, wrap("get preseed", err)
	}
	p, err := pgx.CollectExactlyOneRow(rows, scanPreseed)
	if err == pgx.ErrNoRows {
		return p, rackplane.Errorf(rackplane.ENOTFOUND, "no preseed %q", name)
	}
	return p, wrap("get preseed", err)
}

// GetPreseedVersion returns one version with its content.
func (db *DB) GetPreseedVersion(ctx context.Context, name string, version int64) (PreseedVersion, error) {
	var v PreseedVersion
	err := db.pool.QueryRow(ctx, `SELECT name, version, content, origin, author, comment, based_on, created_at, format
		FROM preseed_versions WHERE name = $1 AND version = $2`, name, version).
		Scan(&v.Name, &v.Version, &v.Content, &v.Origin, &v.Author, &v.Comment, &v.BasedOn, &v.CreatedAt, &v.Format)
	if err == pgx.ErrNoRows {
		return v, rackplane.Errorf(rackplane.ENOTFOUND, "preseed %q has no version %d", name, version)
	}
	v.Format = versionFormat(v.Format, v.Content)
	return v, wrap("get preseed version", err)
}

// ListPreseedVersions returns a preseed's versions, oldest first, without
// their content.
func (db *DB) ListPreseedVersions(ctx context.Context, name string) ([]PreseedVersion, error) {
	rows, err := db.pool.Query(ctx, `SELECT name, version, origin, author, comment, based_on, created_at, format,
			CASE WHEN format = '' THEN content ELSE '' END
		FROM preseed_versions WHERE name = $1 ORDER BY version`, name)
	if err != nil {
		return nil, wrap("list preseed versions", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PreseedVersion, error) {
		var v PreseedVersion
		var content string
		err := row.Scan(&v.Name, &v.Version, &v.Origin, &v.Author, &v.Comment, &v.BasedOn, &v.CreatedAt, &v.Format, &content)
		v.Format = versionFormat(v.Format, content)
		return v, err
	})
	return out, wrap("list preseed versions", err)
}

// PreseedFor picks the preseed for a machine: the most specific scope that
// matches — machine, os+release+arch, os+release, os, global.
func (db *DB) PreseedFor(ctx context.Context, machineID, os, release, arch string) (Preseed, error) {
	rows, err := db.pool.Query(ctx, selectPreseed+` WHERE
		   (scope_kind = 'machine' AND scope_machine = $1)
		OR (scope_kind = 'os_release_arch' AND scope_os = $2 AND scope_release = $3 AND scope_arch = $4)
		OR (scope_kind = 'os_release' AND scope_os = $2 AND scope_release = $3)
		OR (scope_kind = 'os' AND scope_os = $2)
		OR scope_kind = 'global'
		ORDER BY CASE scope_kind WHEN 'machine' THEN 0 WHEN 'os_release_arch' THEN 1 WHEN 'os_release' THEN 2
			WHEN 'os' THEN 3 ELSE 4 END, name LIMIT 1`, key(machineID), os, release, arch)
	if err != nil {
		return Preseed{}, wrap("preseed for machine", err)
	}
	p, err := pgx.CollectExactlyOneRow(rows, scanPreseed)
	if err == pgx.ErrNoRows {
		return p, rackplane.Errorf(rackplane.ENOTFOUND, "no preseed matches machine %s (%s/%s/%s)", machineID, os, release, arch)
	}
	return p, wrap("preseed for machine", err)
}

// AppendPreseed appends ev to preseed name's stream, in a transaction of
// its own, at version expected (ExpectNoStream: a new preseed).
func (db *DB) AppendPreseed(ctx context.Context, name string, expected int64, ev events.Event) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.Emit(ctx, tx, events.PreseedStreamName(name), expected, ev)
		return err
	})
}
