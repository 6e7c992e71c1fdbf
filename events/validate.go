package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

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
// The bytes are parsed once (parseJSON): the schema is checked on that
// parse, and the Event is built from it, its data being the bytes of the
// data member as sent. Only a refused message is read again, for what can
// be recorded of it. The parsers are pooled: the maps of an accepted
// message's parse serve the next ones, and the names and envelope values
// events repeat are kept as strings once made.
func (v *Validator) Decode(raw []byte) (Event, error) {
	if len(raw) > MaxEventSize {
		return Event{}, &RejectError{ReasonTooLarge, fmt.Errorf("%d bytes, limit %d", len(raw), MaxEventSize)}
	}
	p := parsers.Get().(*parser)
	defer parsers.Put(p)
	doc, data, perr := p.parse(raw)
	if perr != nil {
		p.forget()
		// encoding/json has the last word, and the error message.
		d, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return Event{}, &RejectError{ReasonMalformed, fmt.Errorf("not JSON: %w", err)}
		}
		doc, data = d, nil
	}
	e, err := v.decodeDoc(raw, doc, data)
	if err == nil {
		// Nothing holds the document's maps: the next parses reuse them.
		p.recycle()
	} else {
		p.forget()
	}
	return e, err
}

// decodeDoc validates doc, the parse of raw (data the bytes of its data
// member, nil when not known), and makes its Event.
func (v *Validator) decodeDoc(raw []byte, doc any, data []byte) (Event, error) {
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
	e, err := fromDoc(obj, raw, data)
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
// its parse, data the bytes of its data member (nil when not known). It
// gives what json.Unmarshal into an Event gives for such a document (the
// schema admits only the envelope's names, each of its type), without
// parsing raw again.
func fromDoc(obj map[string]any, raw, data []byte) (Event, error) {
	if data == nil {
		var e Event
		err := json.Unmarshal(raw, &e)
		return e, err
	}
	str := func(k string) string { s, _ := obj[k].(string); return s }
	e := Event{
		SpecVersion: str("specversion"), ID: str("id"), Source: str("source"), Type: str("type"),
		Subject: str("subject"), DataContentType: str("datacontenttype"),
		CorrelationID: str("correlationid"), CausationID: str("causationid"), Actor: str("actor"),
		Data: data,
	}
	// time.Time's UnmarshalJSON reads the string as written, escapes and
	// all, and so refuses an escaped one that UnmarshalText would take
	// once unescaped: such an event is left to json.Unmarshal, which
	// refuses it as every reader of the log would.
	t := str("time")
	if !bytes.Contains(raw, []byte(`"`+t+`"`)) {
		var e Event
		err := json.Unmarshal(raw, &e)
		return e, err
	}
	if err := e.Time.UnmarshalText([]byte(t)); err != nil {
		return Event{}, fmt.Errorf("time: %w", err)
	}
	return e, nil
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
