package rackimages

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/rackcall"
)

// How long to wait for the rack unless the caller says otherwise. Starting
// an import may wait behind other work on the rack, so it gets longer than
// the quick reads and removals.
const (
	DefaultImportStartTimeout = 30 * time.Second
	DefaultRackTimeout        = 5 * time.Second
	MaxRackTimeout            = 2 * time.Minute
	// DefaultScrubTimeout is the longest wait by default: a scrub reads
	// every stored file. Past it the rack still finishes; what it finds
	// corrupt shows as image_corrupt events and unusable versions.
	DefaultScrubTimeout = MaxRackTimeout
)

// Store is what the service needs of the region's database. The region's
// postgres package implements it.
type Store interface {
	GetRack(ctx context.Context, id string) (rackplane.Rack, error)
}

// Meta says who asks for a change, for the region's log.
type Meta struct {
	Actor, RequestID string
}

// ImportRequest names exactly one source. SystemBootloaders is a pointer
// so that an explicit false reaches validation instead of vanishing.
type ImportRequest struct {
	URL               string `json:"url,omitempty"`
	Dir               string `json:"dir,omitempty"`
	SystemBootloaders *bool  `json:"system_bootloaders,omitempty"`
	// DebianNetboot and Simplestreams are the installer and mirror
	// sources; the rack's request schema says what they hold.
	DebianNetboot *events.DebianNetbootSource `json:"debian_netboot,omitempty"`
	Simplestreams *events.SimplestreamsSource `json:"simplestreams,omitempty"`
}

type importsRequest struct {
	ID string `json:"id,omitempty"`
}

type deleteRequest struct {
	VersionID string `json:"version_id"`
}

type gcRequest struct {
	DryRun bool `json:"dry_run"`
}

// Service asks racks' image stores over NATS.
type Service struct {
	store Store
	nc    *nats.Conn
	log   *slog.Logger
}

// New returns a service on store that asks racks over nc.
func New(store Store, nc *nats.Conn, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, nc: nc, log: log}
}

// Rack is the rack id names, which the region must know.
func (s *Service) Rack(ctx context.Context, id string) (rackplane.Rack, error) {
	return s.store.GetRack(ctx, id)
}

// List returns the versions rack's store holds, as the rack gives them.
func (s *Service) List(ctx context.Context, rack rackplane.Rack, timeout time.Duration) (json.RawMessage, error) {
	var out struct {
		Versions json.RawMessage `json:"versions"`
	}
	err := s.call(ctx, rack, events.MethodImagesList, struct{}{}, timeout, &out)
	return out.Versions, err
}

// Import starts an import on rack and returns its status and id (empty
// when the rack's status names none).
func (s *Service) Import(ctx context.Context, rack rackplane.Rack, req ImportRequest, timeout time.Duration, m Meta) (json.RawMessage, string, error) {
	s.logChange(rack, events.MethodImagesImport, m, "source_kind", sourceKind(req))
	var status json.RawMessage
	if err := s.call(ctx, rack, events.MethodImagesImport, req, timeout, &status); err != nil {
		return nil, "", err
	}
	var head struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(status, &head); err != nil {
		return status, "", nil
	}
	return status, head.ID, nil
}

// Imports lists rack's imports, never nil.
func (s *Service) Imports(ctx context.Context, rack rackplane.Rack, timeout time.Duration) ([]json.RawMessage, error) {
	out, err := s.imports(ctx, rack, "", timeout)
	if err == nil && out == nil {
		out = []json.RawMessage{}
	}
	return out, err
}

// GetImport is the status of one of rack's imports.
func (s *Service) GetImport(ctx context.Context, rack rackplane.Rack, id string, timeout time.Duration) (json.RawMessage, error) {
	out, err := s.imports(ctx, rack, id, timeout)
	if err != nil {
		return nil, err
	}
	if len(out) != 1 {
		return nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "rack %s answered with %d imports for import %s, want 1", rack.ID, len(out), id)
	}
	return out[0], nil
}

func (s *Service) imports(ctx context.Context, rack rackplane.Rack, id string, timeout time.Duration) ([]json.RawMessage, error) {
	var out struct {
		Imports []json.RawMessage `json:"imports"`
	}
	err := s.call(ctx, rack, events.MethodImagesImports, importsRequest{ID: id}, timeout, &out)
	return out.Imports, err
}

// Delete removes a version from rack's store and returns the rack's report.
func (s *Service) Delete(ctx context.Context, rack rackplane.Rack, version string, timeout time.Duration, m Meta) (json.RawMessage, error) {
	s.logChange(rack, events.MethodImagesDelete, m, "version_id", clip(version))
	var report json.RawMessage
	err := s.call(ctx, rack, events.MethodImagesDelete, deleteRequest{VersionID: version}, timeout, &report)
	return report, err
}

// GC collects rack's unreferenced versions (only reports them when dryRun)
// and returns the rack's report.
func (s *Service) GC(ctx context.Context, rack rackplane.Rack, dryRun bool, timeout time.Duration, m Meta) (json.RawMessage, error) {
	s.logChange(rack, events.MethodImagesGC, m, "dry_run", dryRun)
	var report json.RawMessage
	err := s.call(ctx, rack, events.MethodImagesGC, gcRequest{DryRun: dryRun}, timeout, &report)
	return report, err
}

// Scrub verifies every file of rack's store against its sha256 and
// returns the rack's report: the files checked and those found corrupt,
// which the rack has quarantined.
func (s *Service) Scrub(ctx context.Context, rack rackplane.Rack, timeout time.Duration, m Meta) (json.RawMessage, error) {
	s.logChange(rack, events.MethodImagesScrub, m)
	var report json.RawMessage
	err := s.call(ctx, rack, events.MethodImagesScrub, struct{}{}, timeout, &report)
	return report, err
}

// logChange records who asked a rack's image store for a change. The
// rack's request schemas have no room for who asked, so the region's log
// says it until the audit log does.
func (s *Service) logChange(rack rackplane.Rack, method string, m Meta, attrs ...any) {
	s.log.Info("image store change requested", append([]any{"rack_id", rack.ID, "method", method,
		"actor", m.Actor, "request_id", m.RequestID}, attrs...)...)
}

// sourceKind names an import's source without its address, which may
// carry credentials.
func sourceKind(req ImportRequest) string {
	switch {
	case req.URL != "":
		return "url"
	case req.Dir != "":
		return "dir"
	case req.DebianNetboot != nil:
		return "debian_netboot"
	case req.Simplestreams != nil && req.Simplestreams.URL != "":
		return "simplestreams_url"
	case req.Simplestreams != nil:
		return "simplestreams_dir"
	default:
		return "system_bootloaders"
	}
}

// call asks rack's image store. The request is checked against the
// method's schema before it leaves, so bad input is EINVALID even while
// the rack is away; the reply is checked after, as any outside input.
// Errors the rack answers with (not found, conflict, invalid) pass through.
func (s *Service) call(ctx context.Context, rack rackplane.Rack, method string, req any, timeout time.Duration, out any) error {
	return rackcall.Do(ctx, s.nc, s.log, rackcall.Call{Rack: rack, Method: method, Timeout: timeout, What: "its image store",
		RequestSchema: events.ImagesRPCSchema(method, events.PartRequest), ReplySchema: events.ImagesRPCSchema(method, events.PartReply)}, req, out)
}

// Encode is req as the rack receives it, checked against the method's
// request schema: EINVALID, with the problem on one line, when it breaks it.
func Encode(method string, req any) ([]byte, error) {
	return rackcall.Encode(method, events.ImagesRPCSchema(method, events.PartRequest), req)
}

// clip keeps a message short enough for a response or a log line.
func clip(s string) string { return rackcall.Clip(s) }
