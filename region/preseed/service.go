package preseed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Store is what the preseed service needs of the region's database.
type Store interface {
	GetPreseed(ctx context.Context, name string) (postgres.Preseed, error)
	ListPreseeds(ctx context.Context) ([]postgres.Preseed, error)
	GetPreseedVersion(ctx context.Context, name string, version int64) (postgres.PreseedVersion, error)
	ListPreseedVersions(ctx context.Context, name string) ([]postgres.PreseedVersion, error)
	// AppendPreseed appends ev to the preseed's stream if it is at version
	// expected (postgres.ExpectNoStream: a new preseed), else returns a
	// *postgres.ConflictError.
	AppendPreseed(ctx context.Context, name string, expected int64, ev events.Event) error
}

// Meta says who saves a version and in which request.
type Meta struct {
	Actor         string
	CorrelationID string
	Cause         *events.Event
}

// Service keeps preseeds' versions: every save is a new immutable
// version, made only from the version the editor saw.
type Service struct {
	store Store
	now   func() time.Time
	log   *slog.Logger
}

// NewService returns a service on store; now may be nil (time.Now).
func NewService(store Store, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, now: now, log: log}
}

// nameRE is what a preseed name may be: it is a path segment and a
// stream name.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// CheckScope refuses a scope that does not name exactly what its kind
// needs.
func CheckScope(sc events.PreseedScope) error {
	need := map[string][]string{
		"global": {}, "os": {"os"}, "os_release": {"os", "release"},
		"os_release_arch": {"os", "release", "arch"}, "machine": {"machine_id"},
	}
	fields, ok := need[sc.Kind]
	if !ok {
		return rackplane.Errorf(rackplane.EINVALID, "scope kind %q: want machine, os_release_arch, os_release, os or global", sc.Kind)
	}
	have := map[string]string{"os": sc.OS, "release": sc.Release, "arch": sc.Arch, "machine_id": sc.MachineID}
	for _, f := range fields {
		if have[f] == "" {
			return rackplane.Errorf(rackplane.EINVALID, "scope %s needs %s", sc.Kind, strings.Join(fields, ", "))
		}
	}
	for f, v := range have {
		if v != "" && !slices.Contains(fields, f) {
			return rackplane.Errorf(rackplane.EINVALID, "scope %s takes no %s", sc.Kind, f)
		}
		if v != "" && f != "machine_id" && !nameRE.MatchString(v) {
			return rackplane.Errorf(rackplane.EINVALID, "scope %s %q is not a name", f, v)
		}
	}
	return nil
}

// Get, List, Version and Versions read preseeds as they are.
func (s *Service) Get(ctx context.Context, name string) (postgres.Preseed, error) {
	return s.store.GetPreseed(ctx, name)
}

// List returns every preseed.
func (s *Service) List(ctx context.Context) ([]postgres.Preseed, error) {
	return s.store.ListPreseeds(ctx)
}

// Version returns one version with its content.
func (s *Service) Version(ctx context.Context, name string, v int64) (postgres.PreseedVersion, error) {
	return s.store.GetPreseedVersion(ctx, name, v)
}

// Versions returns a preseed's versions, oldest first; ENOTFOUND when
// there is no such preseed.
func (s *Service) Versions(ctx context.Context, name string) ([]postgres.PreseedVersion, error) {
	if _, err := s.store.GetPreseed(ctx, name); err != nil {
		return nil, err
	}
	return s.store.ListPreseedVersions(ctx, name)
}

// Format is the format a version is saved with: format, the author's
// (one of events.PreseedFormats), or, when empty, the one its content is
// detected as (events.DetectPreseedFormat; the rules are in the package
// documentation).
func Format(format, content string) (string, error) {
	if format == "" {
		return events.DetectPreseedFormat(content), nil
	}
	if !slices.Contains(events.PreseedFormats, format) {
		return "", rackplane.Errorf(rackplane.EINVALID, "format %q: want one of %s, or none to detect it from the content",
			format, strings.Join(events.PreseedFormats, ", "))
	}
	return format, nil
}

// Create saves version 1 of a new preseed; scope nil is global, format
// "" the one detected from content.
func (s *Service) Create(ctx context.Context, name, content, format string, scope *events.PreseedScope, comment string, meta Meta) error {
	if !nameRE.MatchString(name) {
		return rackplane.Errorf(rackplane.EINVALID, "name %q: want letters, digits, dot, dash, underscore; at most 64", name)
	}
	sc := events.PreseedScope{Kind: "global"}
	if scope != nil {
		sc = *scope
	}
	if err := CheckScope(sc); err != nil {
		return err
	}
	if err := Check(name, content); err != nil {
		return err
	}
	format, err := Format(format, content)
	if err != nil {
		return err
	}
	return s.save(ctx, events.PreseedVersionCreated{Name: name, Version: 1, Content: content, Scope: sc, Origin: "operator",
		Author: meta.Actor, Comment: comment, Current: true, Format: format}, postgres.ExpectNoStream, meta)
}

// Edit saves content as the version after base, the version the editor
// read; scope nil keeps the preseed's; format "" is the one detected from
// content (an edit may change what the document is), but where the new
// content is detected as none (other) it keeps a format the author gave
// the version edited: an author who said kickstart of a document the
// rules miss meant it, and an edit of its text does not unsay it.
func (s *Service) Edit(ctx context.Context, name string, base int64, content, format string, scope *events.PreseedScope, comment string, meta Meta) error {
	p, err := s.store.GetPreseed(ctx, name)
	if err != nil {
		return err
	}
	sc := p.Scope
	if scope != nil {
		sc = *scope
	}
	if err := CheckScope(sc); err != nil {
		return err
	}
	if err := Check(name, content); err != nil {
		return err
	}
	if format == "" && events.DetectPreseedFormat(content) == events.PreseedFormatOther {
		if prev, err := s.store.GetPreseedVersion(ctx, name, base); err == nil && prev.Format != "" &&
			prev.Format != events.DetectPreseedFormat(prev.Content) {
			format = prev.Format
		}
	}
	format, err = Format(format, content)
	if err != nil {
		return err
	}
	return s.save(ctx, events.PreseedVersionCreated{Name: name, Version: base + 1, Content: content, Scope: sc, Origin: "operator",
		Author: meta.Actor, Comment: comment, BasedOn: base, Current: true, Format: format}, base, meta)
}

// Rollback saves the content of version to as the version after base.
func (s *Service) Rollback(ctx context.Context, name string, base, to int64, comment string, meta Meta) error {
	p, err := s.store.GetPreseed(ctx, name)
	if err != nil {
		return err
	}
	old, err := s.store.GetPreseedVersion(ctx, name, to)
	if err != nil {
		return err
	}
	if comment == "" {
		comment = fmt.Sprintf("rollback to version %d", to)
	}
	// The content comes back with the format it was saved with.
	return s.save(ctx, events.PreseedVersionCreated{Name: name, Version: base + 1, Content: old.Content, Scope: p.Scope, Origin: "operator",
		Author: meta.Actor, Comment: comment, BasedOn: to, Current: true, Format: old.Format}, base, meta)
}

// save appends a version at expected. The stream version is the preseed
// version, so a stale edit is a conflict: a precondition failure for an
// edit, a conflict for a create.
func (s *Service) save(ctx context.Context, d events.PreseedVersionCreated, expected int64, meta Meta) error {
	ev, err := events.New(events.RegionSource, events.TypePreseedVersionCreated, events.PreseedStreamName(d.Name), s.now(), d)
	if err != nil {
		return err
	}
	ev.Actor, ev.CorrelationID = meta.Actor, meta.CorrelationID
	if meta.Cause != nil {
		ev = ev.CausedBy(*meta.Cause)
	}
	err = s.store.AppendPreseed(ctx, d.Name, expected, ev)
	var ce *postgres.ConflictError
	if errors.As(err, &ce) {
		if expected == postgres.ExpectNoStream {
			return rackplane.WrapError(rackplane.ECONFLICT, err, "preseed %q exists already", d.Name)
		}
		return rackplane.WrapError(rackplane.EPRECONDITION, err, "preseed %q is no longer at version %d: someone else saved a new version; read it again", d.Name, expected)
	}
	return err
}

// StoreShipped stores a default preseed a rack ships as a version whose
// origin is the rack, when that content from that rack is not stored yet.
// It becomes the current version only when the current one came from the
// same rack: an operator's edit is never silently overwritten, and one
// rack cannot replace what another shipped (a rack broken into would
// otherwise choose what every machine installs with); an operator makes
// another rack's version current by choice. A version
// saved by someone else meanwhile makes it give up: the rack's next
// snapshot tries again.
func (s *Service) StoreShipped(ctx context.Context, rackID string, p events.ShippedPreseed, cause *events.Event) error {
	origin := "rack:" + rackID
	if err := Check(p.Name, p.Content); err != nil {
		s.log.Warn("rack ships a preseed that does not render; not stored", "rack_id", rackID, "preseed", p.Name, "err", err)
		return nil
	}
	d := events.PreseedVersionCreated{Name: p.Name, Version: 1, Content: p.Content, Scope: p.Scope, Origin: origin,
		Author: origin, Comment: "default shipped by the rack", Current: true, Format: events.DetectPreseedFormat(p.Content)}
	expected := postgres.ExpectNoStream
	cur, err := s.store.GetPreseed(ctx, p.Name)
	switch {
	case err == nil:
		versions, err := s.store.ListPreseedVersions(ctx, p.Name)
		if err != nil {
			return err
		}
		for _, v := range versions {
			if v.Origin != origin {
				continue
			}
			full, err := s.store.GetPreseedVersion(ctx, p.Name, v.Version)
			if err != nil {
				return err
			}
			if full.Content == p.Content {
				return nil // this content from this rack is stored already
			}
		}
		current, err := s.store.GetPreseedVersion(ctx, p.Name, cur.CurrentVersion)
		if err != nil {
			return err
		}
		d.Version, d.BasedOn, d.Scope = cur.LatestVersion+1, cur.LatestVersion, cur.Scope
		d.Current = current.Origin == origin
		expected = cur.LatestVersion
	case rackplane.ErrorCode(err) != rackplane.ENOTFOUND:
		return err
	}
	err = s.save(ctx, d, expected, Meta{Actor: origin, Cause: cause})
	if code := rackplane.ErrorCode(err); code == rackplane.ECONFLICT || code == rackplane.EPRECONDITION {
		return nil
	}
	if err == nil {
		s.log.Info("stored a rack's default preseed", "preseed", p.Name, "version", d.Version, "origin", origin, "current", d.Current)
	}
	return err
}
