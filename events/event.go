package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

// Event is the envelope of every event, with CloudEvents 1.0 attribute names
// plus the correlationid, causationid and actor extensions.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data"`
	CorrelationID   string          `json:"correlationid,omitempty"`
	CausationID     string          `json:"causationid,omitempty"`
	Actor           string          `json:"actor,omitempty"`
}

// New builds an event with a fresh UUIDv7 id. UUIDv7 ids sort by creation
// time, which keeps the events table's unique index append-friendly.
func New(source, typ, subject string, now time.Time, data any) (Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("new event id: %w", err)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              id.String(),
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            now.UTC().Truncate(time.Microsecond),
		DataContentType: "application/json",
		Data:            raw,
	}, nil
}

// CausedBy marks e as a consequence of cause: same correlation, cause's id
// as causation. It returns e for chaining.
func (e Event) CausedBy(cause Event) Event {
	e.CausationID = cause.ID
	e.CorrelationID = cause.CorrelationID
	if e.CorrelationID == "" {
		e.CorrelationID = cause.ID
	}
	return e
}

// Encode returns the JSON form of e as sent on NATS: json.Marshal's.
// The events the code makes are written without reflection (appendEvent),
// anything else by json.Marshal.
func Encode(e Event) ([]byte, error) {
	// The names, quotes and commas, a time, and what the strings hold.
	size := 200 + len(e.SpecVersion) + len(e.ID) + len(e.Source) + len(e.Type) + len(e.Subject) +
		len(e.DataContentType) + len(e.Data) + len(e.CorrelationID) + len(e.CausationID) + len(e.Actor)
	if b, ok := appendEvent(make([]byte, 0, size), &e); ok {
		return b, nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return b, nil
}

// DecodeData unmarshals the event's data into v.
func (e Event) DecodeData(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data: %w", e.Type, err)
	}
	return nil
}

// Name returns the short name of a versioned type:
// "rackplane.rack.rack_registered.v1" gives "rack_registered".
func Name(typ string) string {
	// Cut, not Split: this runs for every rack event ingested, and
	// allocates nothing.
	_, rest, ok1 := strings.Cut(typ, ".")
	_, rest, ok2 := strings.Cut(rest, ".")
	name, version, ok3 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !ok3 || strings.Contains(version, ".") {
		return ""
	}
	return name
}

// RackSource is the CloudEvents source of events a rack emits.
func RackSource(rackID string) string { return "rackplane/rack/" + rackID }

// RegionSource is the CloudEvents source of events the region emits.
const RegionSource = "rackplane/region"

// RackIDFromSource returns the rack id of a rack source, or "" when source
// is not a rack's.
func RackIDFromSource(source string) string {
	id, ok := strings.CutPrefix(source, "rackplane/rack/")
	if !ok {
		return ""
	}
	return id
}
