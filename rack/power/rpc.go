package power

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// maxRequest bounds a power request body.
const maxRequest = 64 << 10

// RegisterRPC answers power on rack rackID's rpc subject: every request is
// checked against power_rpc.request.v1 first, decoded strictly, and run
// with Do. Give it an rpc server of its own (its concurrency a little
// above Config.Concurrency, its timeout above twice Config.Timeout): a
// flood of power requests then waits there, not in the slots of the
// rack's other rpc.
func (m *Manager) RegisterRPC(srv *rpc.Server, rackID string) error {
	if rackID != m.cfg.RackID {
		return rackplane.Errorf(rackplane.EINVALID, "power rpc registered for rack %q, but the manager is rack %q's", rackID, m.cfg.RackID)
	}
	set, err := schema.Default()
	if err != nil {
		return err
	}
	return srv.Handle(events.RackRPCSubject(rackID, events.MethodPower), "", func(ctx context.Context, data []byte) (any, error) {
		req, err := DecodeRequest(set, data)
		if err != nil {
			return nil, err
		}
		return m.Do(ctx, req), nil
	})
}

// DecodeRequest checks a power request against its schema and decodes
// it strictly. Its errors name where the body is wrong and by which
// rule, never a value: the body holds a password.
func DecodeRequest(set *schema.Set, data []byte) (Request, error) {
	name := events.PowerRPCSchema(events.PartRequest)
	if len(data) > maxRequest {
		return Request{}, rackplane.Errorf(rackplane.EINVALID, "power request is %d bytes, limit %d", len(data), maxRequest)
	}
	if err := set.ValidateJSON(name, data); err != nil {
		return Request{}, rackplane.Errorf(rackplane.EINVALID, "power request breaks %s: %s", name, schemaProblems(err))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return Request{}, rackplane.Errorf(rackplane.EINVALID, "malformed power request")
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return Request{}, rackplane.Errorf(rackplane.EINVALID, "malformed power request: data after the JSON object")
	}
	return req, nil
}

// schemaProblems lists where a document breaks its schema and which
// keyword says so ("/parameters/port: maximum"), without the values the
// validator's own messages quote.
func schemaProblems(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return "not one JSON object"
	}
	seen := map[string]bool{}
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			p := "/" + strings.Join(e.InstanceLocation, "/")
			if kw := e.ErrorKind.KeywordPath(); len(kw) > 0 {
				p += ": " + strings.Join(kw, "/")
			}
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], "…")
	}
	return strings.Join(out, "; ")
}
