package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/schema"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"postgres": "ok", "nats": "ok"}
	ready := true
	if err := s.pinger.Ping(ctx); err != nil {
		s.log.Warn("readiness: postgres", "err", err)
		checks["postgres"] = "unreachable"
		ready = false
	}
	if st := s.nc.Status(); st != nats.CONNECTED {
		checks["nats"] = st.String()
		ready = false
	}
	if s.natsAuth != nil {
		switch {
		case !s.natsAuth.Callout():
			// Ready, but say it on every probe: on an open server
			// anyone can act as any rack or as the region.
			checks["nats_auth"] = "off: -no-nats-callout, NATS authorises racks by its own configuration, if at all"
		case s.natsAuth.Listening():
			checks["nats_auth"] = "callout"
		default:
			checks["nats_auth"] = "starting"
			ready = false
		}
	}
	if s.heartbeats != nil {
		checks["heartbeats"] = "listening"
		if !s.heartbeats.Listening() {
			checks["heartbeats"] = "starting"
			ready = false
		}
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", retryAfter)
	}
	return writeJSON(w, status, map[string]any{"ready": ready, "checks": checks})
}

// listRacks lists the racks in service, online ones first (then by name,
// the latest started first): the first rack of a name is one that
// answers. ?retired=true lists the retired ones instead.
func (s *Server) listRacks(w http.ResponseWriter, r *http.Request) error {
	list := s.racks.ListRacks
	switch v := r.URL.Query().Get("retired"); v {
	case "", "false":
	case "true":
		list = s.racks.ListRetiredRacks
	default:
		return rackplane.Errorf(rackplane.EINVALID, "retired %q: want true or false", v)
	}
	racks, err := list(r.Context())
	if err != nil {
		return err
	}
	if racks == nil {
		racks = []rackplane.Rack{}
	}
	for i := range racks {
		s.withHeartbeat(&racks[i])
	}
	return writeJSON(w, http.StatusOK, map[string]any{"racks": racks})
}

// PathUUID returns path value name, which must be a UUID.
func PathUUID(r *http.Request, name string) (string, error) {
	v := r.PathValue(name)
	id, err := uuid.Parse(v)
	if err != nil {
		return "", rackplane.Errorf(rackplane.EINVALID, "%s %q is not a UUID", name, v)
	}
	return id.String(), nil
}

func (s *Server) getRack(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	rack, err := s.racks.GetRack(r.Context(), id)
	if err != nil {
		return err
	}
	s.withHeartbeat(&rack)
	return writeJSON(w, http.StatusOK, rack)
}

// QueryInt parses an optional integer query parameter within [lo, hi].
func QueryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, rackplane.Errorf(rackplane.EINVALID, "%s must be a whole number from %d to %d", name, lo, hi)
	}
	return n, nil
}

// QueryDuration parses the query parameter name as a Go duration from lo
// to hi, def when absent.
func QueryDuration(r *http.Request, name string, def, lo, hi time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		return 0, rackplane.Errorf(rackplane.EINVALID, "%s must be a duration from %s to %s, such as %s", name, lo, hi, min(max(lo, 10*time.Second), hi))
	}
	return d, nil
}

// MaxEventsWait bounds ?wait= of GET /api/v1/events: below the usual
// 60 s idle timeout of proxies between clients and the API.
const MaxEventsWait = 55 * time.Second

type eventsPage struct {
	Events []postgres.Stored `json:"events"`
	Next   string            `json:"next"`
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	after, err := postgres.ParseCursor(q.Get("after"))
	if err != nil {
		return err
	}
	limit, err := QueryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	wait, err := QueryDuration(r, "wait", 0, 0, MaxEventsWait)
	if err != nil {
		return err
	}
	f := postgres.ReadFilter{Stream: q.Get("stream"), Types: q["type"]}
	if err := knownEventTypes(f.Types); err != nil {
		return err
	}
	last, err := QueryInt(r, "last", 0, 1, 1000)
	if err != nil {
		return err
	}
	if last > 0 && (q.Get("after") != "" || wait > 0) {
		return rackplane.Errorf(rackplane.EINVALID, "last reads the newest events; it goes with neither after nor wait")
	}
	// A reader at the end of the log may wait for what comes next rather
	// than poll: the request returns as soon as an event it would see is
	// appended, or empty when wait is up. last reads the tail instead, for
	// a screen that shows the newest events and then follows on from the
	// cursor it gets.
	ctx := r.Context()
	deadline := time.Now().Add(wait)
	var evs []postgres.Stored
	var next postgres.Cursor
	for {
		var woken <-chan struct{}
		if s.appended != nil {
			woken = s.appended.Next()
		}
		if err := s.eventLog.AwaitSettled(ctx, time.Second); err != nil {
			return clientGone(ctx, w, err)
		}
		if last > 0 {
			evs, next, err = s.eventLog.ReadLastEvents(ctx, last, f)
		} else {
			evs, next, err = s.eventLog.ReadEvents(ctx, after, limit, f)
		}
		if err != nil {
			return clientGone(ctx, w, err)
		}
		left := time.Until(deadline)
		if len(evs) > 0 || left <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			return clientGone(ctx, w, ctx.Err())
		case <-httpserver.Stopping(ctx):
			// The region is shutting down: the wait is up now, and the
			// client asks again, of this region when it is back or of
			// another.
			deadline = time.Now()
		case <-woken:
		case <-time.After(min(left, time.Second)):
		}
	}
	if evs == nil {
		evs = []postgres.Stored{}
	}
	return writeJSON(w, http.StatusOK, eventsPage{Events: evs, Next: next.String()})
}

// StatusClientClosedRequest is what the metrics count for a request whose
// client went away before the answer (nginx's 499): a page closed or
// moved on while its long poll of the event log waited. Nobody reads the
// answer, and it is no failure of the region's.
const StatusClientClosedRequest = 499

// clientGone is err, unless the client's request ended (ctx canceled):
// then it records StatusClientClosedRequest and nil.
func clientGone(ctx context.Context, w http.ResponseWriter, err error) error {
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		w.WriteHeader(StatusClientClosedRequest)
		return nil
	}
	return err
}

func (s *Server) listRejected(w http.ResponseWriter, r *http.Request) error {
	limit, err := QueryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	rej, err := s.eventLog.ListRejected(r.Context(), limit)
	if err != nil {
		return err
	}
	if rej == nil {
		rej = []postgres.Rejected{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"rejected_events": rej})
}

// knownEventTypes refuses a type no event has (each has a schema file):
// a misspelt type would otherwise read as a log without such events.
func knownEventTypes(types []string) error {
	set, err := schema.Default()
	if err != nil {
		return err
	}
	var bad []string
	for _, t := range types {
		if !strings.HasPrefix(t, "rackplane.") || !set.Has(t) {
			bad = append(bad, fmt.Sprintf("%.80q", t))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	var all []string
	for _, n := range set.Names() {
		if strings.HasPrefix(n, "rackplane.") {
			all = append(all, n)
		}
	}
	slices.Sort(all)
	return rackplane.Errorf(rackplane.EINVALID, "type %s: no such event type; the types: %s", strings.Join(bad, ", "), strings.Join(all, ", "))
}
