package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// compileOne compiles one schema written out, formats asserted as Compile
// asserts them.
func compileOne(t *testing.T, text string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("x.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("x.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzSureFormats: a string the fast checks of a format accept, the
// library's format accepts too; and of uuids, it accepts no other.
func FuzzSureFormats(f *testing.F) {
	for _, s := range []string{"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5B", "0193a1b2-c3d4-7e5f-8a9b0c1d2e3f4a5b-",
		"2026-11-30T19:00:00.123456Z", "2024-02-29T23:59:59+23:59", "2023-02-29T00:00:00Z", "2026-12-31T23:59:60Z",
		"0000-01-01T00:00:00-00:00", "2026-04-31T00:00:00Z", "2026-11-30t19:00:00z", "2026-11-30T19:00:00.Z",
		"+026-11-30T19:00:00Z", "2026-11-30T19:00:00+24:00", "2026-11-30T19:00:00+1:000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, sure := range sureFormats {
			validate := compiledFormat(t, name)
			ok := validate(s) == nil
			if sure(s) && !ok {
				t.Fatalf("%s: %q is sure, and the library refuses it: %v", name, s, validate(s))
			}
			if name == "uuid" && ok && !sure(s) {
				t.Fatalf("uuid: %q is valid, and not sure", s)
			}
		}
	})
}

var formats = map[string]func(any) error{}

func compiledFormat(t *testing.T, name string) func(any) error {
	if f := formats[name]; f != nil {
		return f
	}
	f := compileOne(t, fmt.Sprintf(`{"format":%q}`, name)).Format.Validate
	formats[name] = f
	return f
}

// TestSureDateTimesAreCommon: the date-times events carry are sure ones.
func TestSureDateTimesAreCommon(t *testing.T) {
	for _, s := range []string{"2026-11-30T19:00:00Z", "2026-11-30T19:00:00.123456789Z", "2024-02-29T00:00:00+05:30",
		"1999-12-31T23:59:59.5-08:00"} {
		if !sureDateTime(s) {
			t.Errorf("%q not sure", s)
		}
	}
}

// FuzzNumberChecks: the integer comparisons of the fast validator give
// the library's verdict on bounds and multiples, whatever the number.
func FuzzNumberChecks(f *testing.F) {
	f.Add("5", int64(1), int64(10), int64(0), false, false, false)
	f.Add("-9223372036854775808", int64(-5), int64(5), int64(3), true, true, true)
	f.Add("1e2", int64(100), int64(100), int64(50), false, false, true)
	f.Add("10.0", int64(10), int64(11), int64(5), true, false, true)
	f.Add("999999999999999999", int64(0), int64(9223372036854775807), int64(7), false, true, true)
	f.Add("-0", int64(0), int64(0), int64(1), false, false, true)
	f.Fuzz(func(t *testing.T, n string, lo, hi, mul int64, xlo, xhi, withMul bool) {
		if !json.Valid([]byte(n)) {
			return
		}
		var num json.Number
		dec := json.NewDecoder(bytes.NewReader([]byte(n)))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return
		}
		num, ok := v.(json.Number)
		if !ok {
			return
		}
		kw := map[bool]string{false: "minimum", true: "exclusiveMinimum"}[xlo]
		kwHi := map[bool]string{false: "maximum", true: "exclusiveMaximum"}[xhi]
		text := fmt.Sprintf(`{"%s":%d,"%s":%d`, kw, lo, kwHi, hi)
		if withMul && mul > 0 {
			text += fmt.Sprintf(`,"multipleOf":%d`, mul)
		}
		text += "}"
		s := compileOne(t, text)
		check := numberChecks(s)
		want := func() (ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			return s.Validate(num) == nil
		}()
		if got := check(num); got != want {
			t.Fatalf("%s against %s: fast %v, library %v", n, text, got, want)
		}
	})
}
