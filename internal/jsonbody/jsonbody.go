package jsonbody

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/rackplane/rackplane"
)

// Decode reads body, one JSON value, into v (a pointer): no unknown field,
// no trailing data. An error is EINVALID with a message from Describe;
// required names the fields a client must send, for the message of an
// empty body (checking them is the caller's).
func Decode(body []byte, v any, required ...string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return rackplane.Errorf(rackplane.EINVALID, "%s", Describe(err, body, v, required...))
	}
	if dec.More() {
		return rackplane.Errorf(rackplane.EINVALID, "request body: trailing data after the JSON value (at %s): send one JSON object", position(body, dec.InputOffset()))
	}
	return nil
}

// Describe says what is wrong with body, given err from decoding it into
// v, in the client's terms (required as for Decode).
func Describe(err error, body []byte, v any, required ...string) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(body)) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return "the request needs a JSON body: " + Shape(v, required...)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("request body: the JSON ends early, at %s: send the whole object", position(body, int64(len(body))))
	case errors.As(err, &se):
		// Offset counts the bytes read, the bad character the last.
		return fmt.Sprintf("request body: not valid JSON at %s: %s", position(body, se.Offset-1), syntaxProblem(se))
	case errors.As(err, &te):
		return "request body: " + typeProblem(te, v)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		known := fieldNames(reflect.TypeOf(v))
		if len(known) == 0 || !flat(reflect.TypeOf(v)) {
			// A field of a nested object: which object, encoding/json
			// does not say, so the top level's fields could mislead.
			return "request body: unknown field " + clip(name, 80)
		}
		return fmt.Sprintf("request body: unknown field %s (the fields are %s)", clip(name, 80), strings.Join(known, ", "))
	}
	// A field's own decoder refused its value (a CIDR, a time): its
	// message says what it wanted; the prefix is encoding/json's.
	return "request body: " + clip(strings.TrimPrefix(msg, "json: "), 200)
}

// syntaxProblem is encoding/json's description of a syntax error without
// the character it quotes, which could be one of a secret's.
func syntaxProblem(se *json.SyntaxError) string {
	msg := strings.TrimPrefix(se.Error(), "json: ")
	if rest, ok := strings.CutPrefix(msg, "invalid character "); ok {
		// The character is quoted as Go quotes a rune: 'x', '\n', '\''.
		if i := strings.LastIndex(rest, "' "); i >= 0 {
			return "unexpected character " + rest[i+2:]
		}
	}
	return msg
}

// position is where offset falls in body, as a person counts: line and
// column from 1, and the byte offset.
func position(body []byte, offset int64) string {
	if offset < 0 {
		offset = 0
	}
	if offset > int64(len(body)) {
		offset = int64(len(body))
	}
	before := body[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d (byte %d)", line, col, offset)
}

// typeProblem says which field has a value of the wrong kind, and what it
// wants.
func typeProblem(te *json.UnmarshalTypeError, v any) string {
	got := gotKind(te.Value)
	if te.Field == "" {
		return fmt.Sprintf("want %s, got %s", wantKind(te.Type), got)
	}
	// Field is the path of JSON names (list items have none); a list's
	// item of the wrong kind is reported with the item's type.
	if ft := fieldType(reflect.TypeOf(v), te.Field); ft != nil {
		if k := deref(ft).Kind(); (k == reflect.Slice || k == reflect.Array) && deref(ft) != deref(te.Type) {
			return fmt.Sprintf("%s: want a list whose items are each %s, got %s among them", te.Field, wantKind(te.Type), got)
		}
	}
	return fmt.Sprintf("%s: want %s, got %s", te.Field, wantKind(te.Type), got)
}

// gotKind renders encoding/json's description of the value it found.
func gotKind(value string) string {
	switch {
	case value == "number":
		return "a number"
	case strings.HasPrefix(value, "number "):
		return "the number " + clip(strings.TrimPrefix(value, "number "), 30)
	case value == "string":
		return "a string"
	case value == "bool":
		return "true or false"
	case value == "array":
		return "a list"
	case value == "object":
		return "an object"
	}
	return clip(value, 30)
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// wantKind names the kind of JSON value t is decoded from.
func wantKind(t reflect.Type) string {
	t = deref(t)
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another kind of value"
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// field is one JSON field of a struct.
type field struct {
	name string
	typ  reflect.Type
}

// fields lists t's JSON fields in declaration order, those of embedded
// structs in place; nil when t is not a struct.
func fields(t reflect.Type) []field {
	t = deref(t)
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && deref(f.Type).Kind() == reflect.Struct {
			out = append(out, fields(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, field{name: name, typ: f.Type})
	}
	return out
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for _, f := range fields(t) {
		names = append(names, f.name)
	}
	return names
}

// flat reports whether no field of t holds an object of fields, where an
// unknown field could also be.
func flat(t reflect.Type) bool {
	for _, f := range fields(t) {
		ft := deref(f.typ)
		if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array {
			ft = deref(ft.Elem())
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
			return false
		}
	}
	return true
}

// fieldType follows path, JSON names joined by dots, from t.
func fieldType(t reflect.Type, path string) reflect.Type {
	for _, name := range strings.Split(path, ".") {
		t = deref(t)
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			t = deref(t.Elem())
		}
		var next reflect.Type
		for _, f := range fields(t) {
			if f.name == name {
				next = f.typ
				break
			}
		}
		if next == nil {
			return nil
		}
		t = next
	}
	return t
}

// Shape describes the JSON object v is decoded from, with the kind of each
// field's value and the required ones named: what a client that sent
// nothing should send.
func Shape(v any, required ...string) string {
	fs := fields(reflect.TypeOf(v))
	if fs == nil {
		return "a JSON " + strings.TrimPrefix(strings.TrimPrefix(wantKind(reflect.TypeOf(v)), "a "), "an ")
	}
	var parts []string
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("%q: %s", f.name, example(f.typ, 0)))
	}
	s := "{" + strings.Join(parts, ", ") + "}"
	switch len(required) {
	case 0:
		s += " (every field optional)"
	default:
		s += " (required: " + strings.Join(required, ", ") + ")"
	}
	return s
}

// example is a placeholder of t's JSON kind.
func example(t reflect.Type, depth int) string {
	t = deref(t)
	if t == reflect.TypeFor[json.RawMessage]() || t.Kind() == reflect.Interface {
		return "…"
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return `"…"`
	}
	switch t.Kind() {
	case reflect.String:
		return `"…"`
	case reflect.Bool:
		return "false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "0"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return `"…"` // base64
		}
		return "[" + example(t.Elem(), depth+1) + "]"
	case reflect.Map:
		return "{…}"
	case reflect.Struct:
		fs := fields(t)
		if depth > 0 || len(fs) == 0 {
			return "{…}"
		}
		parts := make([]string, len(fs))
		for i, f := range fs {
			parts[i] = fmt.Sprintf("%q: %s", f.name, example(f.typ, depth+1))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return "…"
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
