package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/rackplane/rackplane/schema"
)

// Reasons an incoming message is rejected. They are recorded with the
// message and label the rejection metric, so they stay few and stable.
const (
	ReasonMalformed    = "malformed"     // not JSON, or not an envelope
	ReasonUnknownType  = "unknown_type"  // no schema for the type
	ReasonSchema       = "schema"        // breaks its type's schema
	ReasonWrongSubject = "wrong_subject" // subject or source does not match the sender
	ReasonTooLarge     = "too_large"     // over MaxEventSize
	ReasonProjection   = "projection"    // valid, but the state change it asks for is refused
)

// MaxEventSize bounds an event on the wire; anything larger is rejected
// before it is parsed.
const MaxEventSize = 1 << 20

// RejectError says why a message is not a valid event.
type RejectError struct {
	Reason string
	Err    error
}

func (e *RejectError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

// Validator checks events against the schema files.
type Validator struct {
	set *schema.Set
}

// NewValidator returns a validator over the embedded schema files.
func NewValidator() (*Validator, error) {
	set, err := schema.Default()
	if err != nil {
		return nil, fmt.Errorf("load schemas: %w", err)
	}
	return &Validator{set: set}, nil
}

// Known reports whether typ has a schema.
func (v *Validator) Known(typ string) bool { return v.set.Has(typ) }

// Decode parses and validates raw bytes from the wire. Any failure is a
// *RejectError.
//
// The bytes are parsed once: the schema is checked on that parse, and the
// Event is built from it, its data being the bytes of the data member as
// sent. Only a refused message is read again, for what can be recorded
// of it.
func (v *Validator) Decode(raw []byte) (Event, error) {
	if len(raw) > MaxEventSize {
		return Event{}, &RejectError{ReasonTooLarge, fmt.Errorf("%d bytes, limit %d", len(raw), MaxEventSize)}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return Event{}, &RejectError{ReasonMalformed, fmt.Errorf("not JSON: %w", err)}
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return Event{}, &RejectError{ReasonMalformed, errors.New("not a JSON object")}
	}
	typ, _ := obj["type"].(string)
	if typ == "" {
		if err := v.set.Validate("envelope", doc); err != nil {
			return Event{}, &RejectError{ReasonMalformed, err}
		}
		return Event{}, &RejectError{ReasonMalformed, errors.New("no type")}
	}
	if !v.set.Has(typ) {
		if err := v.set.Validate("envelope", doc); err != nil {
			return partial(raw), &RejectError{ReasonMalformed, err}
		}
		return partial(raw), &RejectError{ReasonUnknownType, fmt.Errorf("no schema for type %q", typ)}
	}
	// Every type's schema includes the envelope's.
	if err := v.set.Validate(typ, doc); err != nil {
		return partial(raw), &RejectError{ReasonSchema, err}
	}
	e, err := fromDoc(obj, raw)
	if err != nil {
		return Event{}, &RejectError{ReasonMalformed, err}
	}
	if check := dataChecks[typ]; check != nil {
		if err := check(e); err != nil {
			return e, &RejectError{ReasonSchema, err}
		}
	}
	return e, nil
}

// partial is what can be read of a refused message (id, type, source), so
// that the record of the refusal says whose it was.
func partial(raw []byte) Event {
	var e Event
	_ = json.Unmarshal(raw, &e)
	return e
}

// fromDoc builds the Event of a document that passed its schema: obj is
// its parse, raw its bytes. It gives what json.Unmarshal into an Event
// gives for such a document (the schema admits only the envelope's
// names, each of its type), without parsing raw again.
func fromDoc(obj map[string]any, raw []byte) (Event, error) {
	str := func(k string) string { s, _ := obj[k].(string); return s }
	e := Event{
		SpecVersion: str("specversion"), ID: str("id"), Source: str("source"), Type: str("type"),
		Subject: str("subject"), DataContentType: str("datacontenttype"),
		CorrelationID: str("correlationid"), CausationID: str("causationid"), Actor: str("actor"),
	}
	if err := e.Time.UnmarshalText([]byte(str("time"))); err != nil {
		return Event{}, fmt.Errorf("time: %w", err)
	}
	data, ok := memberBytes(raw, "data")
	if !ok {
		return Event{}, errors.New("no data member")
	}
	e.Data = data
	return e, nil
}

// memberBytes returns the bytes of the value of the top-level member name
// of raw, a JSON object already known to be valid; of repeated names, the
// last, as a decoder keeps. The bytes are raw's own, not a copy.
func memberBytes(raw []byte, name string) (json.RawMessage, bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	i++
	var found json.RawMessage
	for {
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != '"' {
			return found, found != nil
		}
		kend := skipString(raw, i)
		key := raw[i:kend]
		i = skipSpace(raw, kend)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		i = skipSpace(raw, i+1)
		vend := skipValue(raw, i)
		if keyIs(key, name) {
			found = raw[i:vend:vend]
		}
		i = skipSpace(raw, vend)
		if i < len(raw) && raw[i] == ',' {
			i++
			continue
		}
		return found, found != nil
	}
}

// keyIs compares a quoted JSON key with name, unescaping it only when it
// has escapes.
func keyIs(quoted []byte, name string) bool {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	var k string
	return json.Unmarshal(quoted, &k) == nil && k == name
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] (a quote).
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the valid JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	// A number, true, false or null ends at the next delimiter.
	for i < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[i])) {
		i++
	}
	return i
}

// dataChecks are the rules of a type's data that its schema cannot
// express (uniqueness by a field, one field bounding another, the
// subject naming what the data names). An event that breaks one is
// refused as one that breaks its schema: whole, before anything applies
// it.
var dataChecks = map[string]func(Event) error{
	TypeInventoryReported:          checkInventoryReported,
	TypeAgentStepReported:          checkAgentEvent,
	TypeAgentFinished:              checkAgentEvent,
	TypeAgentScriptReported:        checkAgentScriptReported,
	TypeCommissioningScriptSet:     checkCommissioningScriptSet,
	TypeCommissioningScriptDeleted: checkCommissioningScriptDeleted,
}

// Validate checks an event built in this process, before it is sent or
// stored: an emitter's bug must not reach the wire.
func (v *Validator) Validate(e Event) error {
	raw, err := Encode(e)
	if err != nil {
		return err
	}
	_, err = v.Decode(raw)
	return err
}
