package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const rackEventJSON = `{"specversion":"1.0","id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
	"source":"rackplane/rack/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","type":"rackplane.rack.events_dropped.v1",
	"subject":"rack/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","time":"2026-11-30T19:00:00.123456Z",
	"datacontenttype":"application/json","data":{"count":3,"since":"2026-11-30T18:00:00Z","types":{"a":1}},
	"correlationid":"c","actor":"x"}`

// TestDecodeGivesWhatUnmarshalGives: the Event built from the one parse
// of a valid message is the Event json.Unmarshal makes of it, whatever
// the spacing, escapes in names, member order or a repeated data member.
func TestDecodeGivesWhatUnmarshalGives(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	variants := []string{
		rackEventJSON,
		strings.ReplaceAll(rackEventJSON, "\n\t", ""),
		strings.ReplaceAll(rackEventJSON, `":`, `" : `),
		strings.ReplaceAll(rackEventJSON, ",", " ,\r\n "),
		strings.Replace(rackEventJSON, `"data":`, `"d\u0061ta":`, 1),
		strings.Replace(rackEventJSON, `"data":`, `"data":{"count":9,"since":"2026-11-30T18:00:00Z","x":"}]\"["},"data":`, 1),
		strings.Replace(rackEventJSON, `{"specversion"`, `{"data":[1,{"a":"]"}],"specversion"`, 1),
		strings.Replace(rackEventJSON, `"count":3`, `"count":3e0`, 1),
		strings.Replace(rackEventJSON, `"types":{"a":1}`, `"types":{"a\"}":1,"b":[]}`, 1) + "  \n",
	}
	for _, raw := range variants {
		got, err := v.Decode([]byte(raw))
		var want Event
		if uerr := json.Unmarshal([]byte(raw), &want); uerr != nil {
			t.Fatalf("unmarshal %s: %v", raw, uerr)
		}
		if err != nil {
			// A variant the schema refuses must be one whose data is
			// not an object of the type.
			if !strings.Contains(raw, `"x":`) && !strings.Contains(raw, `"b":[]`) {
				t.Errorf("decode %s: %v", raw, err)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decode %s:\n got %+v\nwant %+v", raw, got, want)
		}
	}
}

// FuzzDecodeIsUnmarshal: whatever the bytes, an accepted message is the Event
// json.Unmarshal makes of it.
func FuzzDecodeIsUnmarshal(f *testing.F) {
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(rackEventJSON))
	f.Add([]byte(strings.Replace(rackEventJSON, `"data":`, `"d\u0061ta":`, 1)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := v.Decode(raw)
		if err != nil {
			return
		}
		var want Event
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("accepted %q, which does not unmarshal: %v", raw, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decode %q:\n got %+v\nwant %+v", raw, got, want)
		}
	})
}

// FuzzParseJSONIsTheDecoders: the one-pass parser gives the value the
// schema library's decoder (encoding/json, numbers as json.Number) gives,
// and accepts exactly what it accepts; of an object, the data member's
// bytes are the ones json.Unmarshal keeps.
func FuzzParseJSONIsTheDecoders(f *testing.F) {
	for _, s := range []string{rackEventJSON, `{"data":{"a":[1,2.5e-3,-0,"\u00e9\ud83d\ude00\ud800x"]},"data":{}}`,
		`[true,false,null,{"":""}]`, `"\xff\xfe"`, `{"d\u0061ta":"x"} `, `1 2`, `01`, `-`, `{"a":1,}`, `[1,]`,
		`"\u12"`, `"a\tb"`, `{"a" 1}`, `  {}  `, `1e+5`, `1.`, `"\/\b\f\n\r\t\"\\"`, "\"\x7f\xc3\xa9\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, data, err := parseJSON(raw)
		want, werr := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if (err == nil) != (werr == nil) {
			t.Fatalf("parse %q: error %v, the decoder's %v", raw, err, werr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("parse %q:\n got %#v\nwant %#v", raw, got, want)
		}
		if obj, ok := want.(map[string]any); ok {
			// json.Unmarshal matches names regardless of case; the
			// envelope's schema admits only "data" itself.
			other := false
			for k := range obj {
				other = other || k != "data" && strings.EqualFold(k, "data")
			}
			if _, has := obj["data"]; has && !other {
				var e struct{ Data json.RawMessage }
				if err := json.Unmarshal(raw, &e); err == nil && string(e.Data) != string(data) {
					t.Fatalf("parse %q: data %q, want %q", raw, data, e.Data)
				}
			}
		}
	})
}

// decodeFresh is Decode with a parser of its own, which reuses nothing
// of earlier parses: what Decode was before parsers kept their memory.
func decodeFresh(v *Validator, raw []byte) (Event, error) {
	if len(raw) > MaxEventSize {
		return v.Decode(raw)
	}
	doc, data, perr := parseJSON(raw)
	if perr != nil {
		d, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return Event{}, &RejectError{ReasonMalformed, fmt.Errorf("not JSON: %w", err)}
		}
		doc, data = d, nil
	}
	return v.decodeDoc(raw, doc, data)
}

// FuzzDecodeWithReusedParsers: Decode, whose parsers reuse the maps and
// strings of the messages before, accepts and refuses what a parser of
// its own accepts and refuses, with the same Event and error, whatever
// came before (a message refused, one accepted, this one again).
func FuzzDecodeWithReusedParsers(f *testing.F) {
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(rackEventJSON), []byte(strings.Replace(rackEventJSON, `"count":3`, `"count":-3`, 1)))
	f.Add([]byte(strings.Replace(rackEventJSON, `"types":{"a":1}`, `"types":{"a":1,"b":2,"c":[1,{"d":"e"}]}`, 1)), []byte(`{"a":[1,2,{"b":[]}]`))
	f.Add([]byte(`{"specversion":"1.0","type":"x"}`), []byte(rackEventJSON))
	f.Fuzz(func(t *testing.T, raw, before []byte) {
		want, werr := decodeFresh(v, raw)
		for _, prev := range [][]byte{before, []byte(rackEventJSON), raw} {
			_, _ = v.Decode(prev)
			got, err := v.Decode(raw)
			if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
				t.Fatalf("decode %q after %q: error %v, a fresh parser's %v", raw, prev, err, werr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decode %q after %q:\n got %+v\nwant %+v", raw, prev, got, want)
			}
		}
	})
}

// FuzzParserReuse: a parser that recycles its maps and interns strings
// gives, parse after parse, the decoder's value.
func FuzzParserReuse(f *testing.F) {
	f.Add([]byte(rackEventJSON), []byte(`{"a":{"b":{"c":[{"d":1},{"d":"e"}]}},"a":2}`))
	f.Add([]byte(`[{"":""},{"":1},[[[]]]]`), []byte(`{"x":"\u0041","x\u0041":"A"}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var p parser
		for _, raw := range [][]byte{a, b, a, []byte(rackEventJSON), b} {
			got, _, err := p.parse(raw)
			want, werr := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if (err == nil) != (werr == nil) {
				t.Fatalf("parse %q: error %v, the decoder's %v", raw, err, werr)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("parse %q:\n got %#v\nwant %#v", raw, got, want)
			}
			if err == nil {
				p.recycle()
			} else {
				p.forget()
			}
			if len(p.stack) != 0 {
				t.Fatalf("parse %q left %d elements on the stack", raw, len(p.stack))
			}
		}
	})
}

// TestRefusalOutlivesLaterDecodes: the error of a refused message, which
// may refer to its document, reads the same after the parser has gone on
// to other messages.
func TestRefusalOutlivesLaterDecodes(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(rackEventJSON, `"types":{"a":1}`, `"types":{"a":"one"}`, 1)
	_, err = v.Decode([]byte(bad))
	if err == nil {
		t.Fatal("a count that is a string accepted")
	}
	before := err.Error()
	for i := range 100 {
		other := strings.Replace(rackEventJSON, `"types":{"a":1}`, fmt.Sprintf(`"types":{"a":%d,"b":%d}`, i+1, i+1), 1)
		if _, err := v.Decode([]byte(other)); err != nil {
			t.Fatal(err)
		}
	}
	if err.Error() != before {
		t.Fatalf("refusal was %q, reads %q after other messages", before, err.Error())
	}
}
