package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
)

// ListReply is the result of images.list.
type ListReply struct {
	Versions []VersionInfo `json:"versions"`
}

// ImportsRequest asks images.imports for one import, or all with no id.
type ImportsRequest struct {
	ID string `json:"id,omitempty"`
}

// ImportsReply is the result of images.imports.
type ImportsReply struct {
	Imports []ImportStatus `json:"imports"`
}

// DeleteRequest is the request of images.delete.
type DeleteRequest struct {
	VersionID string `json:"version_id"`
}

// GCRequest is the request of images.gc.
type GCRequest struct {
	DryRun bool `json:"dry_run"`
}

// RegisterRPC answers the store's methods for rack rackID on srv. Each
// rack has its own subjects, so there is no queue group. The results that
// change state also go out as events.
func (s *Store) RegisterRPC(srv *rpc.Server, rackID string) error {
	if rackID == "" {
		return rackplane.Errorf(rackplane.EINVALID, "RegisterRPC needs the rack id")
	}
	if s.cfg.RackID != "" && rackID != s.cfg.RackID {
		return rackplane.Errorf(rackplane.EINVALID, "RegisterRPC for rack %s, but the store belongs to rack %s", rackID, s.cfg.RackID)
	}
	handlers := map[string]rpc.HandlerFunc{
		events.MethodImagesList: func(ctx context.Context, data []byte) (any, error) {
			if err := decodeRequest(data, &struct{}{}); err != nil {
				return nil, err
			}
			return ListReply{Versions: s.Versions()}, nil
		},
		events.MethodImagesImport: func(ctx context.Context, data []byte) (any, error) {
			var src Source
			if err := decodeRequest(data, &src); err != nil {
				return nil, err
			}
			return s.StartImport(src)
		},
		events.MethodImagesImports: func(ctx context.Context, data []byte) (any, error) {
			var req ImportsRequest
			if err := decodeRequest(data, &req); err != nil {
				return nil, err
			}
			all := s.Imports()
			if req.ID == "" {
				return ImportsReply{Imports: all}, nil
			}
			for _, st := range all {
				if st.ID == req.ID {
					return ImportsReply{Imports: []ImportStatus{st}}, nil
				}
			}
			return nil, rackplane.Errorf(rackplane.ENOTFOUND, "no import %s", truncate(req.ID))
		},
		events.MethodImagesDelete: func(ctx context.Context, data []byte) (any, error) {
			var req DeleteRequest
			if err := decodeRequest(data, &req); err != nil {
				return nil, err
			}
			if req.VersionID == "" {
				return nil, rackplane.Errorf(rackplane.EINVALID, "version_id is required")
			}
			return s.Delete(ctx, req.VersionID)
		},
		events.MethodImagesGC: func(ctx context.Context, data []byte) (any, error) {
			var req GCRequest
			if err := decodeRequest(data, &req); err != nil {
				return nil, err
			}
			return s.GC(ctx, req.DryRun)
		},
		events.MethodImagesScrub: func(ctx context.Context, data []byte) (any, error) {
			if err := decodeRequest(data, &struct{}{}); err != nil {
				return nil, err
			}
			return s.Scrub(ctx)
		},
	}
	for _, m := range []string{events.MethodImagesList, events.MethodImagesImport, events.MethodImagesImports, events.MethodImagesDelete, events.MethodImagesGC, events.MethodImagesScrub} {
		if err := srv.Handle(events.RackRPCSubject(rackID, m), "", s.validated(m, handlers[m])); err != nil {
			return fmt.Errorf("register %s: %w", m, err)
		}
	}
	return nil
}

// RequestSchema and ReplySchema name the schema files of a method's
// request and result.
func RequestSchema(method string) string { return events.ImagesRPCSchema(method, events.PartRequest) }

// ReplySchema: see RequestSchema.
func ReplySchema(method string) string { return events.ImagesRPCSchema(method, events.PartReply) }

// validated checks a request against its schema before h sees it, so a
// caller in any language gets the schema's own words for what is wrong.
func (s *Store) validated(method string, h rpc.HandlerFunc) rpc.HandlerFunc {
	name := RequestSchema(method)
	return func(ctx context.Context, data []byte) (any, error) {
		data = bytes.TrimSpace(data)
		if len(data) == 0 || string(data) == "null" {
			data = []byte("{}")
		}
		if err := s.set.ValidateJSON(name, data); err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "request breaks %s: %s", name, truncateErr(err))
		}
		return h(ctx, data)
	}
}

// decodeRequest is strict: a misspelt field is an error the caller sees,
// not a silently ignored option. An empty body or null means no options.
func decodeRequest(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return rackplane.WrapError(rackplane.EINVALID, err, "malformed request: %s", truncateErr(err))
	}
	if dec.More() {
		return rackplane.Errorf(rackplane.EINVALID, "malformed request: trailing data")
	}
	return nil
}
