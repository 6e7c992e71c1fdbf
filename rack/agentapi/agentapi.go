package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Bounds of a request's body.
const (
	// MaxInventoryBody is an inventory document's.
	MaxInventoryBody = events.MaxInventorySize
	// MaxReportBody is a step's or the final report's.
	MaxReportBody = 16 << 10
	// MaxScriptBody is a script's result's: its output's tail of
	// events.MaxScriptOutput bytes, JSON-escaped.
	MaxScriptBody = 128 << 10
)

// Endpoint is the endpoint label of the agent's refused requests.
const Endpoint = "agent"

// Config configures a Handler.
type Config struct {
	// RackID is the rack whose events these are.
	RackID string
	// Boot returns the decision of machineID's boot whose agent reports
	// to this rack (bootconfig.Cache.Agent).
	Boot func(machineID string) (events.BootDecision, bool)
	// Check reports whether credential is the one of machineID's
	// operation (machinecred.Keyring.Check).
	Check func(machineID, operationID, credential string) bool
	// Publish queues an event (the rack's publisher, which journals it).
	Publish func(events.Event)
	// Scripts asks the region for the commissioning scripts of a
	// machine's agent (rpc commissioning_scripts); nil: the rack serves
	// none, and GET scripts is 404, as on a rack that predates them.
	Scripts func(ctx context.Context, req events.CommissioningScriptsRequest) (events.CommissioningScriptsReply, error)
	// Task gives the agent of a deploy boot its task: the disk image of
	// the boot's decision as the rack's image store has it, where to
	// fetch it, and what the installed system is told; nil: GET deploy
	// is 404, as on a rack that predates disk images.
	Task func(boot events.BootDecision) (events.DeployTask, error)
	// Written is called when a deploy boot's agent reports it wrote the
	// disk image: the machine reboots within seconds, and must boot its
	// disk then, not the agent again (bootconfig.Cache.Written).
	Written func(machineID, deploymentID string)
	// ScriptsTimeout bounds a Scripts call (default 10s).
	ScriptsTimeout time.Duration
	// Refused counts refused requests by endpoint and reason
	// (rackplane_machine_requests_refused_total).
	Refused *prometheus.CounterVec
	Logger  *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Rate and Burst bound each machine's requests: Burst at once, then
	// Rate a second (defaults 2 and 60). An agent sends a handful.
	Rate  float64
	Burst int
}

// Handler serves the agent's endpoints.
type Handler struct {
	cfg       Config
	validator *events.Validator
	limits    *limiter
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.RackID == "" || cfg.Boot == nil || cfg.Check == nil || cfg.Publish == nil || cfg.Refused == nil || cfg.Logger == nil {
		return nil, errors.New("agentapi: RackID, Boot, Check, Publish, Refused and Logger are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ScriptsTimeout <= 0 {
		cfg.ScriptsTimeout = 10 * time.Second
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 2
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 60
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, fmt.Errorf("agentapi: %w", err)
	}
	return &Handler{cfg: cfg, validator: v, limits: newLimiter(cfg.Rate, cfg.Burst, maxLimited)}, nil
}

// Register adds the agent's routes to mux. Every other path under
// /agent/ is refused there: it must not fall through to a handler that
// records paths, which hold credentials.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /agent/{machine}/{credential}/step", h.serve(MaxReportBody, h.step))
	mux.HandleFunc("POST /agent/{machine}/{credential}/inventory", h.serve(MaxInventoryBody, h.inventory))
	mux.HandleFunc("POST /agent/{machine}/{credential}/done", h.serve(MaxReportBody, h.done))
	mux.HandleFunc("POST /agent/{machine}/{credential}/script", h.serve(MaxScriptBody, h.script))
	if h.cfg.Scripts != nil {
		mux.HandleFunc("GET /agent/{machine}/{credential}/scripts", h.scripts)
	}
	if h.cfg.Task != nil {
		mux.HandleFunc("GET /agent/{machine}/{credential}/deploy", h.deployTask)
	}
	mux.HandleFunc("/agent/", h.badPath)
}

// call is one authenticated request of an agent.
type call struct {
	machineID string
	boot      events.BootDecision
	body      []byte
}

// errTooLarge says a body is past its endpoint's bound.
var errTooLarge = errors.New("too large")

// errNotCommissioning refuses what only a commissioning's agent sends
// (the inventory, scripts and their results) from another boot's agent,
// an erase's say: its credential is good for its own operation's steps
// and outcome, nothing that would read as a commissioning's.
var errNotCommissioning = errors.New("not a commissioning")

// serve authenticates a request, reads its body within limit, and hands
// both to do, which returns the event to publish or a client's error.
func (h *Handler) serve(limit int64, do func(call) (events.Event, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		c, ok := h.authenticate(w, req)
		if !ok {
			return
		}
		if !h.limits.allow(c.machineID, h.cfg.Now()) {
			h.refuse(w, req, "rate", c.machineID, http.StatusTooManyRequests, "too many requests of this machine's agent; slow down")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, limit))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				h.refuse(w, req, "too_large", c.machineID, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", limit))
				return
			}
			h.cfg.Logger.Warn("agent request unread", "machine_id", c.machineID, "remote", req.RemoteAddr, "err", err)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The agent tries again on 408.
				http.Error(w, "body not received within the read timeout", http.StatusRequestTimeout)
				return
			}
			http.Error(w, "body not received", http.StatusBadRequest)
			return
		}
		c.body = body
		ev, err := do(c)
		if err == nil {
			err = h.validator.Validate(ev)
			if err != nil && len(body) > MaxReportBody {
				// An inventory within its bound but too large for an
				// event with its envelope.
				err = fmt.Errorf("%w: %v", errTooLarge, err)
			}
		}
		if errors.Is(err, errNotCommissioning) {
			h.refuse(w, req, "not_commissioning", c.machineID, http.StatusForbidden, refused)
			return
		}
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, errTooLarge) {
				status = http.StatusRequestEntityTooLarge
			}
			h.refuse(w, req, "malformed", c.machineID, status, err.Error())
			return
		}
		h.cfg.Publish(ev)
		h.cfg.Logger.Info("agent report taken", "machine_id", c.machineID, "operation_id", c.boot.DeploymentID, "type", events.Name(ev.Type))
		if written(c, ev) && h.cfg.Written != nil {
			h.cfg.Written(c.machineID, c.boot.DeploymentID)
			h.cfg.Logger.Info("disk image written: the machine boots its disk from now on", "machine_id", c.machineID,
				"operation_id", c.boot.DeploymentID)
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// refused is the one answer of every refused credential.
const refused = "the agent's endpoints serve only the agent of the machine's boot in progress, at the URL on its kernel command line"

// authenticate checks the machine and credential of the path against the
// boot in progress; it answers the refusal itself.
func (h *Handler) authenticate(w http.ResponseWriter, req *http.Request) (call, bool) {
	id, err := uuid.Parse(req.PathValue("machine"))
	if err != nil {
		h.refuse(w, req, "not_a_machine", "", http.StatusForbidden, refused)
		return call{}, false
	}
	machineID := id.String()
	boot, ok := h.cfg.Boot(machineID)
	switch {
	case !ok:
		h.refuse(w, req, "no_agent_boot", machineID, http.StatusForbidden, refused)
		return call{}, false
	case !h.cfg.Check(machineID, boot.DeploymentID, req.PathValue("credential")):
		h.refuse(w, req, "wrong_credential", machineID, http.StatusForbidden, refused)
		return call{}, false
	}
	return call{machineID: machineID, boot: boot}, true
}

func (h *Handler) badPath(w http.ResponseWriter, req *http.Request) {
	h.refuse(w, req, "bad_path", "", http.StatusNotFound, "no such path")
}

// refuse answers, counts and logs a refused request; neither the path nor
// the credential is logged.
func (h *Handler) refuse(w http.ResponseWriter, req *http.Request, reason, machineID string, status int, msg string) {
	h.cfg.Refused.WithLabelValues(Endpoint, reason).Inc()
	h.cfg.Logger.Warn("machine request refused", "endpoint", Endpoint, "reason", reason, "machine_id", machineID, "remote", req.RemoteAddr)
	http.Error(w, msg, status)
}

func (h *Handler) event(c call, typ string, data any) (events.Event, error) {
	return events.New(events.RackSource(h.cfg.RackID), typ, events.MachineStreamName(c.machineID), h.cfg.Now(), data)
}

func (h *Handler) step(c call) (events.Event, error) {
	s, err := ParseStep(c.body)
	if err != nil {
		return events.Event{}, err
	}
	return h.event(c, events.TypeAgentStepReported, events.AgentStepReported{MachineID: c.machineID,
		OperationID: c.boot.DeploymentID, Purpose: c.boot.Purpose, Name: s.Name, State: s.State, Message: s.Message, Progress: s.Progress})
}

func (h *Handler) inventory(c call) (events.Event, error) {
	if c.boot.Purpose != events.BootPurposeCommission {
		return events.Event{}, errNotCommissioning
	}
	inv, err := events.DecodeInventory(c.body)
	if err != nil {
		return events.Event{}, err
	}
	return h.event(c, events.TypeInventoryReported, events.InventoryReported{MachineID: c.machineID,
		OperationID: c.boot.DeploymentID, Inventory: inv})
}

func (h *Handler) done(c call) (events.Event, error) {
	d, err := ParseDone(c.body)
	if err != nil {
		return events.Event{}, err
	}
	return h.event(c, events.TypeAgentFinished, events.AgentFinished{MachineID: c.machineID,
		OperationID: c.boot.DeploymentID, Purpose: c.boot.Purpose, Success: d.Success, Message: d.Message})
}

// written reports whether ev is a deploy boot's agent saying it wrote
// the disk image.
func written(c call, ev events.Event) bool {
	if c.boot.Purpose != events.BootPurposeDeploy || ev.Type != events.TypeAgentFinished {
		return false
	}
	var d events.AgentFinished
	return ev.DecodeData(&d) == nil && d.Success
}

// deployTask answers a deploy boot's agent's GET deploy with its task.
func (h *Handler) deployTask(w http.ResponseWriter, req *http.Request) {
	c, ok := h.authenticate(w, req)
	if !ok {
		return
	}
	if c.boot.Purpose != events.BootPurposeDeploy {
		h.refuse(w, req, "not_deploying", c.machineID, http.StatusForbidden, refused)
		return
	}
	if !h.limits.allow(c.machineID, h.cfg.Now()) {
		h.refuse(w, req, "rate", c.machineID, http.StatusTooManyRequests, "too many requests of this machine's agent; slow down")
		return
	}
	task, err := h.cfg.Task(c.boot)
	if err != nil {
		// The image is gone or unusable on this rack: the agent fails
		// the deployment saying why.
		h.cfg.Logger.Warn("deploy task not given", "machine_id", c.machineID, "disk_image", c.boot.DiskImage, "err", err)
		h.cfg.Refused.WithLabelValues(Endpoint, "no_disk_image").Inc()
		http.Error(w, "this rack cannot give the disk image: "+rackplane.ErrorMessage(err), http.StatusConflict)
		return
	}
	h.cfg.Logger.Info("deploy task served", "machine_id", c.machineID, "operation_id", c.boot.DeploymentID,
		"disk_image", c.boot.DiskImage, "target_disk", task.TargetDisk)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(task)
}

// Step is the body of POST step.
type Step struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Message  string `json:"message,omitempty"`
	Progress int    `json:"progress"`
}

// Done is the body of POST done.
type Done struct {
	Success bool   `json:"success"`
	Message string `json:"message,omitempty"`
}

// ParseStep reads and checks a step. Its name and message are cleaned
// and cut to what an event carries rather than refused: an agent's words
// are worth more than their length.
func ParseStep(b []byte) (Step, error) {
	var raw struct {
		Name     *string `json:"name"`
		State    string  `json:"state"`
		Message  string  `json:"message"`
		Progress *int    `json:"progress"`
	}
	if err := decodeOne(b, &raw); err != nil {
		return Step{}, fmt.Errorf("step: %w", err)
	}
	var errs []error
	s := Step{State: raw.State, Message: clean(raw.Message, events.MaxAgentMessage)}
	if raw.Name != nil {
		s.Name = strings.TrimSpace(clean(*raw.Name, events.MaxAgentStepName))
	}
	if s.Name == "" {
		errs = append(errs, errors.New("name is missing or empty"))
	}
	switch s.State {
	case events.AgentStepStarted, events.AgentStepDone, events.AgentStepFailed:
	default:
		errs = append(errs, fmt.Errorf("state %.20q: want started, done or failed", s.State))
	}
	if raw.Progress != nil {
		s.Progress = *raw.Progress
	}
	if s.Progress < 0 || s.Progress > 100 {
		errs = append(errs, fmt.Errorf("progress %d: want 0 to 100", s.Progress))
	}
	if len(errs) > 0 {
		return Step{}, fmt.Errorf("step: %w", errors.Join(errs...))
	}
	return s, nil
}

// ParseDone reads and checks the final report; success must be given.
func ParseDone(b []byte) (Done, error) {
	var raw struct {
		Success *bool  `json:"success"`
		Message string `json:"message"`
	}
	if err := decodeOne(b, &raw); err != nil {
		return Done{}, fmt.Errorf("done: %w", err)
	}
	if raw.Success == nil {
		return Done{}, errors.New("done: success is missing: want true or false")
	}
	return Done{Success: *raw.Success, Message: clean(raw.Message, events.MaxAgentMessage)}, nil
}

// decodeOne decodes b, one JSON object and nothing after it, into v.
// Unknown fields are let through: a newer agent may say more than this
// rack knows.
func decodeOne(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more than one JSON value")
	}
	return nil
}

// clean makes s text the region keeps: valid UTF-8, no control
// characters but newline and tab (no NUL, which PostgreSQL refuses in
// JSON), at most limit bytes, cut at a character's boundary.
func clean(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "")
	}
	return s
}

// maxLimited bounds the machines whose rates are remembered: agents
// authenticate before they are counted, so it is at most the machines
// commissioning or erasing from this rack.
const maxLimited = 4096

// limiter is a token bucket per machine.
type limiter struct {
	rate  float64
	burst float64
	max   int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(rate float64, burst, most int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), max: most, buckets: map[string]*bucket{}}
}

func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets full buckets, which are as good as new ones; should
// none be full, it forgets all, which lets a few requests too many
// through rather than grow.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}

// scripts answers the agent's GET scripts with what the region says its
// machine's commissioning runs. The region is asked each time, never a
// cache: it decides which operation is in progress and which rack may
// know its scripts.
func (h *Handler) scripts(w http.ResponseWriter, req *http.Request) {
	c, ok := h.authenticate(w, req)
	if !ok {
		return
	}
	if c.boot.Purpose != events.BootPurposeCommission {
		h.refuse(w, req, "not_commissioning", c.machineID, http.StatusForbidden, refused)
		return
	}
	if !h.limits.allow(c.machineID, h.cfg.Now()) {
		h.refuse(w, req, "rate", c.machineID, http.StatusTooManyRequests, "too many requests of this machine's agent; slow down")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), h.cfg.ScriptsTimeout)
	defer cancel()
	reply, err := h.cfg.Scripts(ctx, events.CommissioningScriptsRequest{MachineID: c.machineID, OperationID: c.boot.DeploymentID})
	switch code := rackplane.ErrorCode(err); {
	case err == nil:
	case code == rackplane.EFORBIDDEN || code == rackplane.ENOTFOUND:
		// The region knows no commissioning of this boot in progress
		// (it moved on, or the rack serves the machine no more): the
		// same refusal as any other.
		h.cfg.Logger.Warn("commissioning scripts refused by the region", "machine_id", c.machineID, "err", err)
		h.refuse(w, req, "region_refused", c.machineID, http.StatusForbidden, refused)
		return
	case code == rackplane.EINVALID || code == rackplane.EINTERNAL:
		// The region cannot give them (too many, say): the agent fails
		// the commissioning saying why, rather than run none.
		h.cfg.Logger.Warn("commissioning scripts not given by the region", "machine_id", c.machineID, "err", err)
		h.cfg.Refused.WithLabelValues(Endpoint, "region_error").Inc()
		http.Error(w, "the region did not give this machine's commissioning scripts: "+err.Error(), http.StatusBadGateway)
		return
	default:
		h.cfg.Logger.Warn("commissioning scripts unavailable", "machine_id", c.machineID, "err", err)
		h.cfg.Refused.WithLabelValues(Endpoint, "region_away").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the rack cannot reach the region for this machine's commissioning scripts; try again later", http.StatusServiceUnavailable)
		return
	}
	if reply.Scripts == nil {
		reply.Scripts = []events.CommissioningScript{}
	}
	h.cfg.Logger.Info("commissioning scripts served", "machine_id", c.machineID, "operation_id", c.boot.DeploymentID, "scripts", len(reply.Scripts))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
}

func (h *Handler) script(c call) (events.Event, error) {
	if c.boot.Purpose != events.BootPurposeCommission {
		return events.Event{}, errNotCommissioning
	}
	r, err := ParseScriptResult(c.body)
	if err != nil {
		return events.Event{}, err
	}
	return h.event(c, events.TypeAgentScriptReported, events.AgentScriptReported{MachineID: c.machineID,
		OperationID: c.boot.DeploymentID, Name: r.Name, ExitCode: r.ExitCode, Output: r.Output, Truncated: r.Truncated,
		DurationMS: r.DurationMS})
}

// ScriptResult is the body of POST script: what one commissioning script
// did. ExitCode is -1 for a script killed (at its timeout or by a signal).
type ScriptResult struct {
	Name       string `json:"name"`
	ExitCode   int    `json:"exit_code"`
	Output     string `json:"output"`
	Truncated  bool   `json:"truncated"`
	DurationMS int64  `json:"duration_ms"`
}

// maxScriptDuration bounds a reported run time: longer than any timeout.
const maxScriptDuration = 24 * time.Hour

// ParseScriptResult reads and checks a script's result. The name must be
// a script's; the output is cleaned and cut to its last
// events.MaxScriptOutput bytes (truncated then), never refused for its
// length: the end of a failing script's output says why.
func ParseScriptResult(b []byte) (ScriptResult, error) {
	var raw struct {
		Name       string `json:"name"`
		ExitCode   *int   `json:"exit_code"`
		Output     string `json:"output"`
		Truncated  bool   `json:"truncated"`
		DurationMS int64  `json:"duration_ms"`
	}
	if err := decodeOne(b, &raw); err != nil {
		return ScriptResult{}, fmt.Errorf("script: %w", err)
	}
	var errs []error
	if !events.ValidScriptName(raw.Name) {
		errs = append(errs, fmt.Errorf("name %.70q: not a script's name", raw.Name))
	}
	switch {
	case raw.ExitCode == nil:
		errs = append(errs, errors.New("exit_code is missing"))
	case *raw.ExitCode < -1 || *raw.ExitCode > 255:
		errs = append(errs, fmt.Errorf("exit_code %d: want -1 to 255", *raw.ExitCode))
	}
	if raw.DurationMS < 0 || raw.DurationMS > maxScriptDuration.Milliseconds() {
		errs = append(errs, fmt.Errorf("duration_ms %d: want 0 to %d", raw.DurationMS, maxScriptDuration.Milliseconds()))
	}
	if len(errs) > 0 {
		return ScriptResult{}, fmt.Errorf("script: %w", errors.Join(errs...))
	}
	out, cut := Tail(clean(raw.Output, len(raw.Output)*3+3), events.MaxScriptOutput)
	return ScriptResult{Name: raw.Name, ExitCode: *raw.ExitCode, Output: out, Truncated: raw.Truncated || cut,
		DurationMS: raw.DurationMS}, nil
}

// Tail returns the last limit bytes of s at most, from a character's
// boundary, and whether it cut anything.
func Tail(s string, limit int) (string, bool) {
	if len(s) <= limit {
		return s, false
	}
	s = s[len(s)-limit:]
	for i := 0; i < len(s) && i < utf8.UTFMax; i++ {
		if utf8.RuneStart(s[i]) {
			return s[i:], true
		}
	}
	return strings.ToValidUTF8(s, ""), true
}
