package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/secrets"
)

var osRegistryProjection = Projection{
	Name:   "os_registry",
	Tables: []string{"rack_images", "rack_capabilities"},
	Apply:  applyCapabilities,
}

type imageRow struct {
	OS                 string            `json:"os"`
	OSTitle            string            `json:"os_title"`
	Release            string            `json:"release"`
	ReleaseTitle       string            `json:"release_title"`
	Default            bool              `json:"is_default"`
	RequiresLicenceKey bool              `json:"requires_licence_key"`
	CanCommission      bool              `json:"can_commission"`
	Arch               string            `json:"arch"`
	Subarch            string            `json:"subarch"`
	VersionID          string            `json:"version_id"`
	Label              string            `json:"label"`
	Version            string            `json:"version"`
	Files              []string          `json:"files"`
	Installer          string            `json:"installer"`
	Disk               *events.DiskImage `json:"disk"`
}

// applyCapabilities replaces a rack's snapshot. A snapshot is complete, so
// the rack's rows are deleted and written anew. A retired rack has none:
// its rows go with its retirement, and a snapshot it sends later (on an
// open NATS server nothing keeps it off) is not taken.
func applyCapabilities(q *pgx.Batch, s Stored) error {
	if s.Type == events.TypeRackRetired {
		var d events.RackRetired
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM rack_images WHERE rack_id = $1`, d.RackID)
		q.Queue(`DELETE FROM rack_capabilities WHERE rack_id = $1`, d.RackID)
		return nil
	}
	if s.Type != events.TypeCapabilitiesReported {
		return nil
	}
	var c events.Capabilities
	if err := s.DecodeData(&c); err != nil {
		return err
	}
	rackID := events.RackIDFromSource(s.Source)
	rows := []imageRow{}
	for _, o := range c.OSes {
		for _, r := range o.Releases {
			for _, a := range r.Arches {
				for _, v := range a.Versions {
					files := []string{}
					for _, f := range v.Files {
						files = append(files, f.Name)
					}
					rows = append(rows, imageRow{o.Name, o.Title, r.Name, r.Title, r.Default, r.RequiresLicenceKey,
						r.CanCommission, a.Arch, a.Subarch, v.ID, v.Label, v.Version, files, installerOf(v), v.Disk})
				}
			}
		}
	}
	rowsJSON, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	q.Queue(`INSERT INTO rack_capabilities (rack_id, digest, reported_at, event_id, snapshot)
		SELECT $1::uuid, $2::text, $3::timestamptz, $4::uuid, $5::jsonb
		WHERE NOT EXISTS (SELECT 1 FROM racks WHERE id = $1 AND retired_at IS NOT NULL)
		ON CONFLICT (rack_id) DO UPDATE SET digest = excluded.digest, reported_at = excluded.reported_at,
			event_id = excluded.event_id, snapshot = excluded.snapshot`,
		rackID, c.Digest, s.Time, s.ID, []byte(s.Data))
	q.Queue(`DELETE FROM rack_images WHERE rack_id = $1`, rackID)
	q.Queue(`INSERT INTO rack_images (rack_id, os, os_title, release, release_title, is_default,
			requires_licence_key, can_commission, arch, subarch, version_id, label, version, files,
			installer, disk)
		SELECT $1, x.os, x.os_title, x.release, x.release_title, x.is_default, x.requires_licence_key,
			x.can_commission, x.arch, x.subarch, x.version_id, x.label, x.version,
			coalesce(ARRAY(SELECT jsonb_array_elements_text(x.files)), '{}'), x.installer,
			CASE WHEN jsonb_typeof(x.disk) = 'object' THEN x.disk END
		FROM jsonb_to_recordset($2::jsonb) AS x(os text, os_title text, release text, release_title text,
			is_default boolean, requires_licence_key boolean, can_commission boolean, arch text,
			subarch text, version_id text, label text, version text, files jsonb, installer text, disk jsonb)
		WHERE NOT EXISTS (SELECT 1 FROM racks WHERE id = $1 AND retired_at IS NOT NULL)
		ON CONFLICT DO NOTHING`, rackID, rowsJSON)
	return nil
}

// installerOf is a version's installer family; a version that names none
// boots as every image did before families.
func installerOf(v events.ImageVersion) string {
	if v.Installer == "" {
		return events.InstallerCustom
	}
	return v.Installer
}

// RackCapabilities is a rack's latest snapshot as the region keeps it.
type RackCapabilities struct {
	RackID       string              `json:"rack_id"`
	RackName     string              `json:"rack_name"`
	Online       bool                `json:"online"`
	ReportedAt   time.Time           `json:"reported_at"`
	Capabilities events.Capabilities `json:"capabilities"`
}

// GetRackCapabilities returns a rack's latest snapshot; ENOTFOUND when the
// rack is unknown or has reported none.
func (db *DB) GetRackCapabilities(ctx context.Context, rackID string) (RackCapabilities, error) {
	var rc RackCapabilities
	var raw []byte
	k := key(rackID)
	if !k.Valid {
		return rc, rackplane.Errorf(rackplane.ENOTFOUND, "rack %s has reported no capabilities", rackID)
	}
	err := db.pool.QueryRow(ctx, `SELECT c.rack_id::text, r.name, r.online, c.reported_at, c.snapshot
		FROM rack_capabilities c JOIN racks r ON r.id = c.rack_id WHERE c.rack_id = $1`, k).
		Scan(&rc.RackID, &rc.RackName, &rc.Online, &rc.ReportedAt, &raw)
	if err == pgx.ErrNoRows {
		return rc, rackplane.Errorf(rackplane.ENOTFOUND, "rack %s has reported no capabilities", rackID)
	}
	if err != nil {
		return rc, wrap("get rack capabilities", err)
	}
	return rc, wrap("decode rack capabilities", json.Unmarshal(raw, &rc.Capabilities))
}

// ImageOnRack is one image version a rack can boot, with its OS metadata
// and whether the rack is online.
type ImageOnRack struct {
	RackID             string
	RackName           string
	Online             bool
	OS                 string
	OSTitle            string
	Release            string
	ReleaseTitle       string
	Default            bool
	RequiresLicenceKey bool
	CanCommission      bool
	Arch               string
	Subarch            string
	VersionID          string
	Label              string
	Version            string
	Files              []string
	BootURL            string
	// Installer is the version's installer family (never empty), Disk
	// its disk image (nil but on a disk image).
	Installer string
	Disk      *events.DiskImage
}

// ImageFilter narrows ListImages; empty fields match anything.
type ImageFilter struct {
	OS, Release, Arch string
	OnlineOnly        bool
}

// ListImages returns every image version racks reported, by OS, release,
// arch, rack and version (newest version first).
func (db *DB) ListImages(ctx context.Context, f ImageFilter) ([]ImageOnRack, error) {
	rows, err := db.pool.Query(ctx, `SELECT i.rack_id::text, r.name, r.online, i.os, i.os_title, i.release,
			i.release_title, i.is_default, i.requires_licence_key, i.can_commission, i.arch, i.subarch,
			i.version_id, i.label, i.version, i.files, r.boot_url, i.installer, i.disk
		FROM rack_images i JOIN racks r ON r.id = i.rack_id
		WHERE ($1 = '' OR i.os = $1) AND ($2 = '' OR i.release = $2) AND ($3 = '' OR i.arch = $3)
			AND (NOT $4 OR r.online)
		ORDER BY i.os, i.release, i.arch, i.subarch, r.name, r.id, i.version DESC, i.version_id`,
		f.OS, f.Release, f.Arch, f.OnlineOnly)
	if err != nil {
		return nil, wrap("list images", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ImageOnRack, error) {
		var i ImageOnRack
		err := row.Scan(&i.RackID, &i.RackName, &i.Online, &i.OS, &i.OSTitle, &i.Release, &i.ReleaseTitle,
			&i.Default, &i.RequiresLicenceKey, &i.CanCommission, &i.Arch, &i.Subarch, &i.VersionID, &i.Label, &i.Version,
			&i.Files, &i.BootURL, &i.Installer, &i.Disk)
		return i, err
	})
	return out, wrap("list images", err)
}

// RacksThatCanBoot answers the question deployments ask: which online racks
// have an image of os/release/arch, with their versions, newest first.
func (db *DB) RacksThatCanBoot(ctx context.Context, os, release, arch string) ([]ImageOnRack, error) {
	if os == "" || release == "" || arch == "" {
		return nil, rackplane.Errorf(rackplane.EINVALID, "os, release and arch are all needed")
	}
	return db.ListImages(ctx, ImageFilter{OS: os, Release: release, Arch: arch, OnlineOnly: true})
}

// CapabilityDigests returns each rack's last reported digest.
func (db *DB) CapabilityDigests(ctx context.Context) (map[string]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT rack_id::text, digest FROM rack_capabilities`)
	if err != nil {
		return nil, wrap("capability digests", err)
	}
	out := map[string]string{}
	var id, d string
	_, err = pgx.ForEachRow(rows, []any{&id, &d}, func() error { out[id] = d; return nil })
	return out, wrap("capability digests", err)
}

// LicenceKey is a stored key, masked, with its keyed fingerprint.
type LicenceKey struct {
	OS          string    `json:"os"`
	Release     string    `json:"release"`
	Masked      string    `json:"masked"`
	Fingerprint string    `json:"fingerprint"`
	ValidatedBy string    `json:"validated_by"`
	SetAt       time.Time `json:"set_at"`
}

// LicenceKeyName is the name the licence key of os/release is sealed
// under (sealed_secrets).
func LicenceKeyName(os, release string) string { return "licence_key/" + os + "/" + release }

// SetLicenceKey stores the sealed key and emits licence_key_set (masked,
// with the fingerprint of sealed) in one transaction.
func (db *DB) SetLicenceKey(ctx context.Context, sealed secrets.Secret, ev events.Event) error {
	var d events.LicenceKeySet
	if err := ev.DecodeData(&d); err != nil {
		return err
	}
	if sealed.Name != LicenceKeyName(d.OS, d.Release) || sealed.Fingerprint != d.Fingerprint {
		return fmt.Errorf("licence key of %s/%s: sealed as %q with another fingerprint than the event's", d.OS, d.Release, sealed.Name)
	}
	return db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO licence_keys (os, release, masked, validated_by, set_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (os, release) DO UPDATE SET masked = excluded.masked,
				validated_by = excluded.validated_by, set_at = excluded.set_at`,
			d.OS, d.Release, d.Masked, d.ValidatedBy, ev.Time)
		if err != nil {
			return wrap("store licence key", err)
		}
		if err := putSecret(ctx, tx, sealed, ev.Time); err != nil {
			return err
		}
		_, err = db.Emit(ctx, tx, ev.Subject, ExpectAny, ev)
		return err
	})
}

// LicenceKeys returns the stored keys, masked, by os and release.
func (db *DB) LicenceKeys(ctx context.Context) (map[[2]string]LicenceKey, error) {
	rows, err := db.pool.Query(ctx, `SELECT l.os, l.release, l.masked, coalesce(s.fingerprint, ''), l.validated_by::text, l.set_at
		FROM licence_keys l LEFT JOIN sealed_secrets s ON s.name = 'licence_key/' || l.os || '/' || l.release`)
	if err != nil {
		return nil, wrap("licence keys", err)
	}
	out := map[[2]string]LicenceKey{}
	var k LicenceKey
	_, err = pgx.ForEachRow(rows, []any{&k.OS, &k.Release, &k.Masked, &k.Fingerprint, &k.ValidatedBy, &k.SetAt}, func() error {
		out[[2]string{k.OS, k.Release}] = k
		return nil
	})
	return out, wrap("licence keys", err)
}

// LicenceKeyFor returns the key itself, for rendering an install config:
// ENOTFOUND when none is set, EUNAVAILABLE when it is sealed under a key
// kr lacks.
func (db *DB) LicenceKeyFor(ctx context.Context, kr *secrets.Keyring, os, release string) (string, error) {
	b, err := db.OpenSecret(ctx, kr, LicenceKeyName(os, release))
	if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
		return "", rackplane.Errorf(rackplane.ENOTFOUND, "no licence key for %s/%s", os, release)
	}
	return string(b), err
}

// RecordDivergence emits capabilities_diverged for a rack.
func (db *DB) RecordDivergence(ctx context.Context, ev events.Event) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.Emit(ctx, tx, ev.Subject, ExpectAny, ev)
		return err
	})
}
