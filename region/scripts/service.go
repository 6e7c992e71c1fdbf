package scripts

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Store is what the service needs of the region's database
// (*postgres.DB).
type Store interface {
	ListCommissioningScripts(ctx context.Context, content bool) ([]postgres.CommissioningScript, error)
	GetCommissioningScript(ctx context.Context, name string) (postgres.CommissioningScript, error)
	SaveCommissioningScript(ctx context.Context, name string, exists bool, ev events.Event) error
	CommissioningResults(ctx context.Context, machineID string) (postgres.ScriptResults, error)
}

// Meta says who changes a script and in which request.
type Meta struct {
	Actor         string
	CorrelationID string
}

// Script is a script as an operator gives it; TimeoutSeconds 0 is the
// default (events.DefaultScriptTimeout).
type Script struct {
	Name           string `json:"name"`
	Content        string `json:"content"`
	TimeoutSeconds int    `json:"timeout_seconds"`
	Description    string `json:"description"`
}

// Service keeps commissioning scripts.
type Service struct {
	store Store
	now   func() time.Time
}

// NewService returns a service on store; now may be nil (time.Now).
func NewService(store Store, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, now: now}
}

// Check refuses a script an agent could not run as given, naming the
// field; it fills in the default timeout.
func Check(s *Script) error {
	switch {
	case !events.ValidScriptName(s.Name):
		return rackplane.Errorf(rackplane.EINVALID, "name %.80q: want [a-z0-9][a-z0-9._-]{0,63} (scripts run in name order)", s.Name)
	case s.Content == "" || strings.TrimSpace(s.Content) == "":
		return rackplane.Errorf(rackplane.EINVALID, "content: empty")
	case len(s.Content) > events.MaxScriptContent:
		return rackplane.Errorf(rackplane.EINVALID, "content: %d bytes, at most %d", len(s.Content), events.MaxScriptContent)
	case !utf8.ValidString(s.Content) || strings.ContainsRune(s.Content, 0):
		return rackplane.Errorf(rackplane.EINVALID, "content: not UTF-8 text")
	case s.TimeoutSeconds < 0 || s.TimeoutSeconds > events.MaxScriptTimeout:
		return rackplane.Errorf(rackplane.EINVALID, "timeout_seconds %d: want 1 to %d (0: %d)", s.TimeoutSeconds,
			events.MaxScriptTimeout, events.DefaultScriptTimeout)
	case len(s.Description) > events.MaxScriptDescription:
		return rackplane.Errorf(rackplane.EINVALID, "description: %d bytes, at most %d", len(s.Description), events.MaxScriptDescription)
	case !utf8.ValidString(s.Description) || strings.ContainsFunc(s.Description, func(r rune) bool { return r < 0x20 && r != '\t' }):
		return rackplane.Errorf(rackplane.EINVALID, "description: one line of UTF-8 text")
	}
	if s.TimeoutSeconds == 0 {
		s.TimeoutSeconds = events.DefaultScriptTimeout
	}
	return nil
}

// List returns every script by name, without content.
func (s *Service) List(ctx context.Context) ([]postgres.CommissioningScript, error) {
	list, err := s.store.ListCommissioningScripts(ctx, false)
	if list == nil {
		list = []postgres.CommissioningScript{}
	}
	return list, err
}

// Get returns a script with its content.
func (s *Service) Get(ctx context.Context, name string) (postgres.CommissioningScript, error) {
	return s.store.GetCommissioningScript(ctx, name)
}

// Create adds a script; ECONFLICT when one of that name exists.
func (s *Service) Create(ctx context.Context, sc Script, meta Meta) error {
	return s.set(ctx, sc, false, meta)
}

// Replace replaces script sc.Name whole; ENOTFOUND when there is none.
func (s *Service) Replace(ctx context.Context, sc Script, meta Meta) error {
	return s.set(ctx, sc, true, meta)
}

func (s *Service) set(ctx context.Context, sc Script, exists bool, meta Meta) error {
	if err := Check(&sc); err != nil {
		return err
	}
	// The scripts travel together (events.MaxScriptsTotal); a race of
	// two saves may pass this check both, which the region's rpc
	// answer checks again.
	list, err := s.store.ListCommissioningScripts(ctx, false)
	if err != nil {
		return err
	}
	total, count := len(sc.Content), 1
	for _, o := range list {
		if o.Name != sc.Name {
			total, count = total+o.Size, count+1
		}
	}
	if count > events.MaxScripts {
		return rackplane.Errorf(rackplane.EINVALID, "name: there are %d scripts already, at most %d", count-1, events.MaxScripts)
	}
	if total > events.MaxScriptsTotal {
		return rackplane.Errorf(rackplane.EINVALID, "content: the scripts together would be %d bytes, at most %d (they travel in one message)",
			total, events.MaxScriptsTotal)
	}
	d := events.CommissioningScriptSet{Name: sc.Name, Content: sc.Content, TimeoutSeconds: sc.TimeoutSeconds,
		Description: sc.Description, SHA256: events.ScriptSHA256(sc.Content)}
	return s.save(ctx, sc.Name, events.TypeCommissioningScriptSet, d, exists, meta)
}

// Delete deletes a script; ENOTFOUND when there is none. The results of
// its past runs stay.
func (s *Service) Delete(ctx context.Context, name string, meta Meta) error {
	if !events.ValidScriptName(name) {
		return rackplane.Errorf(rackplane.ENOTFOUND, "no commissioning script %.80q", name)
	}
	return s.save(ctx, name, events.TypeCommissioningScriptDeleted, events.CommissioningScriptDeleted{Name: name}, true, meta)
}

func (s *Service) save(ctx context.Context, name, typ string, data any, exists bool, meta Meta) error {
	ev, err := events.New(events.RegionSource, typ, events.CommissioningScriptStreamName(name), s.now(), data)
	if err != nil {
		return err
	}
	ev.Actor, ev.CorrelationID = meta.Actor, meta.CorrelationID
	return s.store.SaveCommissioningScript(ctx, name, exists, ev)
}

// Results returns what the scripts did on a machine's latest
// commissioning that ran any, in run order.
func (s *Service) Results(ctx context.Context, machineID string) (postgres.ScriptResults, error) {
	return s.store.CommissioningResults(ctx, machineID)
}
