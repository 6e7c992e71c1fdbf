package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/jsonbody"
	"github.com/rackplane/rackplane/region/postgres"
)

// Server serves the API.
type Server struct {
	racks      Racks
	eventLog   EventLog
	tokens     Tokens
	auditLog   AuditLog
	pinger     Pinger
	machines   Machines
	preseeds   Preseeds
	volumes    Volumes
	power      Power
	hardware   Hardware
	scripts    Scripts
	subnets    Subnets
	leases     Leases
	osRegistry OSRegistry
	rackImages RackImages
	stats      Stats
	nc         *nats.Conn
	log        *slog.Logger
	gatherer   prometheus.Gatherer
	mux        *http.ServeMux

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	heartbeats Heartbeats
	appended   EventWatch

	joinTokens  JoinTokens
	rackRevoker RackRevoker
	rackRetirer RackRetirer
	natsAuth    NATSAuth

	// actions are the patterns of the audited routes: the values of an
	// audit entry's action.
	actions []string
}

// NATSAuth tells how racks are authorised on NATS, for /readyz.
type NATSAuth interface {
	// Callout is false when the region runs without its auth callout
	// (-no-nats-callout).
	Callout() bool
	// Listening reports whether the server has the callout's
	// subscription (no rack can connect until it has).
	Listening() bool
}

// EventWatch wakes readers waiting at the end of the event log.
type EventWatch interface {
	// Next is closed at the next append after the call.
	Next() <-chan struct{}
}

// Heartbeats tells when a rack was last heard; the log records only its
// transitions, so the live figure comes from the liveness monitor.
type Heartbeats interface {
	LastHeartbeat(rackID string) (time.Time, bool)
	// Listening reports whether heartbeats sent now are heard; the
	// region is not ready before.
	Listening() bool
}

func (s *Server) withHeartbeat(r *rackplane.Rack) {
	if s.heartbeats == nil {
		return
	}
	if t, ok := s.heartbeats.LastHeartbeat(r.ID); ok && (r.LastHeartbeat == nil || t.After(*r.LastHeartbeat)) {
		t = t.UTC()
		r.LastHeartbeat = &t
	}
}

// Deps are what the API serves from; a server built for one area's test
// may leave the others nil.
type Deps struct {
	// DB is every store below at once, for what Racks, EventLog, Tokens,
	// AuditLog and Pinger leave unset.
	DB       *postgres.DB
	Racks    Racks
	EventLog EventLog
	Tokens   Tokens
	AuditLog AuditLog
	Pinger   Pinger
	Machines Machines
	Preseeds Preseeds
	Volumes  Volumes
	Subnets  Subnets
	// Leases lists the DHCP leases racks reported; filled from DB when
	// not set.
	Leases Leases
	// Power keeps power parameters and runs power actions; without it
	// the power routes answer 503.
	Power Power
	// Hardware serves machines' hardware inventories; filled from DB
	// when not set.
	Hardware Hardware
	// Scripts keeps commissioning scripts; without it their routes
	// answer 503.
	Scripts Scripts
	// OSRegistry serves /api/v1/os and rack capabilities; RackImages a
	// rack's image store.
	OSRegistry OSRegistry
	RackImages RackImages
	// Stats counts boot traffic for GET /api/v1/stats/boots; filled
	// from DB when not set.
	Stats Stats
	NATS  *nats.Conn
	// Heartbeats makes rack responses carry the latest heartbeat seen.
	Heartbeats Heartbeats
	// Appended lets GET /api/v1/events?wait= return as soon as events are
	// appended; without it a waiting reader looks again every second.
	Appended EventWatch
	// JoinTokens is filled from DB when not set; RackRevoker revokes
	// racks (DELETE /api/v1/racks/{id}/credential answers 503 without
	// it); NATSAuth puts the state of the NATS auth callout in /readyz.
	JoinTokens  JoinTokens
	RackRevoker RackRevoker
	// RackRetirer retires racks (DELETE /api/v1/racks/{id} answers 503
	// without it).
	RackRetirer RackRetirer
	NATSAuth    NATSAuth
	Logger      *slog.Logger
	// The API's metrics go to Registerer; /metrics serves Gatherer.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
}

// New returns a server.
func New(d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Gatherer == nil {
		d.Gatherer = prometheus.NewRegistry()
	}
	if d.DB != nil {
		// Fill in, from DB, each store the caller did not give.
		if d.Racks == nil {
			d.Racks = d.DB
		}
		if d.EventLog == nil {
			d.EventLog = d.DB
		}
		if d.Tokens == nil {
			d.Tokens = d.DB
		}
		if d.AuditLog == nil {
			d.AuditLog = d.DB
		}
		if d.Pinger == nil {
			d.Pinger = d.DB
		}
		if d.JoinTokens == nil {
			d.JoinTokens = d.DB
		}
		if d.Hardware == nil {
			d.Hardware = d.DB
		}
		if d.Leases == nil {
			d.Leases = d.DB
		}
		if d.Stats == nil {
			d.Stats = d.DB
		}
	}
	s := &Server{racks: d.Racks, eventLog: d.EventLog, tokens: d.Tokens, auditLog: d.AuditLog, pinger: d.Pinger,
		machines: d.Machines, volumes: d.Volumes, power: d.Power, hardware: d.Hardware, scripts: d.Scripts, subnets: d.Subnets, leases: d.Leases, preseeds: d.Preseeds, nc: d.NATS, log: d.Logger, gatherer: d.Gatherer, mux: http.NewServeMux(),
		osRegistry: d.OSRegistry, rackImages: d.RackImages, stats: d.Stats, heartbeats: d.Heartbeats, appended: d.Appended,
		joinTokens: d.JoinTokens, rackRevoker: d.RackRevoker, rackRetirer: d.RackRetirer, natsAuth: d.NATSAuth,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_http_requests_total", Help: "API requests by route and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rackplane_region_http_request_seconds", Help: "API request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
	}
	if d.Registerer != nil {
		d.Registerer.MustRegister(s.requests, s.duration)
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	s.handle("GET /api/v1/racks", s.listRacks, "retired")
	s.handle("GET /api/v1/racks/{id}", s.getRack)
	s.handle("DELETE /api/v1/racks/{id}", s.retireRack, "reason")
	s.handle("GET /api/v1/events", s.listEvents, "after", "limit", "wait", "stream", "type", "last")
	s.handle("GET /api/v1/rejected-events", s.listRejected, "limit")
	s.osRoutes()
	s.tokenRoutes()
	s.joinTokenRoutes()
	s.machineRoutes()
	s.preseedRoutes()
	s.imageRoutes()
	s.volumeRoutes()
	s.powerRoutes()
	s.hardwareRoutes()
	s.scriptRoutes()
	s.subnetRoutes()
	s.leaseRoutes()
	s.statsRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, rackplane.Errorf(rackplane.ENOTFOUND, "no route %s %s", r.Method, r.URL.Path))
	})
}

// HandlerFunc is an API handler: it writes a response or returns an error
// for the edge to map.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adds a route; other packages of the region add theirs with it.
// query names the query parameters it reads (see handle).
func (s *Server) Handle(pattern string, h HandlerFunc, query ...string) {
	s.handle(pattern, h, query...)
}

// handle adds a route reading the query parameters named in query: any
// other is refused before h runs, so that a misspelt filter is a 400
// naming it rather than a list that looks filtered. OwnQuery instead
// leaves every check of the query to h.
func (s *Server) handle(pattern string, h HandlerFunc, query ...string) {
	public := publicRoutes[pattern]
	method, _, _ := strings.Cut(pattern, " ")
	mutation := method != http.MethodGet && method != http.MethodHead
	if mutation && !public {
		// The audit log's actions are these patterns.
		s.actions = append(s.actions, pattern)
	}
	// The route's series, found once rather than by their labels on
	// every request.
	took := s.duration.WithLabelValues(pattern)
	ok := s.requests.WithLabelValues(pattern, "200")
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		info, r := requestInfo(r)
		// ServeHTTP's writer, which knows the status already.
		sw, isSW := w.(*statusWriter)
		if !isSW {
			sw = &statusWriter{ResponseWriter: w, status: 200}
		}
		defer func() {
			if sw.status == http.StatusOK {
				ok.Inc()
			} else {
				s.requests.WithLabelValues(pattern, strconv.Itoa(sw.status)).Inc()
			}
			took.Observe(time.Since(info.start).Seconds())
		}()
		if !public {
			actor, err := s.authenticate(r)
			if err != nil {
				s.writeError(sw, r, err)
				return
			}
			info.actor = actor
		}
		var note *auditNote
		if mutation && !public {
			note = &auditNote{}
			info.audit = note
		}
		// A change refused for its query is audited like any other.
		err := checkQuery(pattern, r.URL.Query(), query)
		if err == nil {
			err = h(sw, r)
		}
		if err != nil {
			s.writeError(sw, r, err)
		}
		if note != nil {
			s.audit(r, pattern, sw.status, note, err)
		}
	})
}

// OwnQuery, as handle's only query parameter, says that the handler
// checks the whole query itself (and names every problem of it at once).
const OwnQuery = "\x00own"

// checkQuery refuses a parameter of q that is not in known, naming each
// and what the route takes.
func checkQuery(pattern string, q url.Values, known []string) error {
	if len(known) == 1 && known[0] == OwnQuery {
		return nil
	}
	var unknown []string
	for k := range q {
		if !slices.Contains(known, k) {
			unknown = append(unknown, fmt.Sprintf("%.40q", k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	takes := "takes no query parameters"
	if len(known) > 0 {
		takes = "takes " + strings.Join(known, ", ")
	}
	what := "no such query parameter"
	if len(unknown) > 1 {
		what = "no such query parameters"
	}
	return rackplane.Errorf(rackplane.EINVALID, "%s: %s (%s %s)", strings.Join(unknown, ", "), what, pattern, takes)
}

// Mount serves h at pattern without the API's token check, metrics and
// audit: for what a browser loads before it has a token (the web UI).
// Patterns under /api/ are refused: those belong to the API.
func (s *Server) Mount(pattern string, h http.Handler) {
	path := pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		path = p
	}
	if strings.HasPrefix(path, "/api/") {
		panic("api: Mount of " + pattern + ": /api/ is the API's")
	}
	s.mux.Handle(pattern, h)
}

// publicRoutes need no token: probes and scrapers have none.
var publicRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true}

// ServeHTTP adds a request id and logs the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Request-Id")
	if !goodRequestID(id) {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
	}
	w.Header().Set("X-Request-Id", id)
	info := &reqInfo{id: id, start: time.Now()}
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info))
	sw := &statusWriter{ResponseWriter: w, status: 200}
	s.mux.ServeHTTP(sw, r)
	// The arguments alone would cost allocations on every request.
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration_ms", time.Since(info.start).Milliseconds(), "request_id", id)
	}
}

// reqInfo is what the API knows of a request beyond what net/http does,
// filled in as the request goes: one value in its context, put there
// once, rather than a context and a copy of the request for each.
type reqInfo struct {
	id    string
	start time.Time
	// actor is set once the request's token is checked.
	actor string
	// audit is the note of a mutation (see AuditNote).
	audit *auditNote
}

type reqInfoKey struct{}

func infoOf(ctx context.Context) *reqInfo {
	info, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	return info
}

// requestInfo returns r's reqInfo, and r with one when it came without
// (not through ServeHTTP).
func requestInfo(r *http.Request) (*reqInfo, *http.Request) {
	if info := infoOf(r.Context()); info != nil {
		return info, r
	}
	info := &reqInfo{start: time.Now()}
	return info, r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info))
}

// goodRequestID reports whether a client's request id may be kept: it
// goes into logs and the audit log, so it is short printable ASCII.
func goodRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// RequestID returns the request id of an API request's context.
func RequestID(ctx context.Context) string {
	if info := infoOf(ctx); info != nil {
		return info.id
	}
	return ""
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var statusOf = map[string]int{
	rackplane.EINVALID:      http.StatusBadRequest,
	rackplane.ENOTFOUND:     http.StatusNotFound,
	rackplane.ECONFLICT:     http.StatusConflict,
	rackplane.EPRECONDITION: http.StatusPreconditionFailed,
	rackplane.EUNAUTHORIZED: http.StatusUnauthorized,
	rackplane.EFORBIDDEN:    http.StatusForbidden,
	rackplane.EUNAVAILABLE:  http.StatusServiceUnavailable,
	rackplane.ETIMEOUT:      http.StatusGatewayTimeout,
	rackplane.EINTERNAL:     http.StatusInternalServerError,
}

// ErrorBody is the JSON of an error response.
type ErrorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id,omitempty"`
	} `json:"error"`
}

// retryAfter is what a 503 tells clients to wait, in seconds: a database
// or rack away is usually back within a few.
const retryAfter = "5"

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	// PostgreSQL's errors are classified here, at the edge, once for every
	// handler: the database away is 503, text it cannot store is 400.
	err = postgres.Classify(err)
	code := rackplane.ErrorCode(err)
	if code == rackplane.EINTERNAL {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "request_id", RequestID(r.Context()), "err", err)
	}
	switch code {
	case rackplane.EUNAUTHORIZED:
		w.Header().Set("WWW-Authenticate", `Bearer realm="rackplane"`)
	case rackplane.EUNAVAILABLE:
		w.Header().Set("Retry-After", retryAfter)
		if errors.Is(err, postgres.ErrUnavailable) {
			s.log.Warn("api request failed: database unavailable", "method", r.Method, "path", r.URL.Path, "request_id", RequestID(r.Context()), "err", err)
		}
	}
	var body ErrorBody
	body.Error.Code = code
	body.Error.Message = rackplane.ErrorMessage(err)
	body.Error.RequestID = RequestID(r.Context())
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if code == rackplane.EINVALID && errors.Is(err, os.ErrDeadlineExceeded) {
		// The body did not come within the read timeout.
		status = http.StatusRequestTimeout
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteJSON writes v with status; for handlers of other packages.
func WriteJSON(w http.ResponseWriter, status int, v any) error { return writeJSON(w, status, v) }

// DecodeJSON reads a JSON request body into v, refusing unknown fields,
// trailing data and bodies over 1 MiB. Its messages name the field and
// the kind of value it wants (package jsonbody); required names the
// fields a client must send, for the message of an empty body.
func DecodeJSON(r *http.Request, v any, required ...string) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return rackplane.Errorf(rackplane.EINVALID, "request body over %d bytes", mbe.Limit)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return rackplane.WrapError(rackplane.EINVALID, err, "request body not received in time")
		}
		return rackplane.WrapError(rackplane.EINVALID, err, "request body not received whole")
	}
	return jsonbody.Decode(body, v, required...)
}
