package schema

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestEverySchemaHasAFastValidator: the contract's schemas use only the
// keywords the fast validator implements, so none is left to the slow
// path by accident.
func TestEverySchemaHasAFastValidator(t *testing.T) {
	set, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range set.Names() {
		if set.fast[n] == nil {
			_, err := compileFast(set.schemas[n], map[*jsonschema.Schema]*fastSchema{})
			t.Errorf("schema %s has no fast validator: %v", n, err)
		}
	}
}

// TestFastValidatorAgreesWithTheLibrary: for documents generated from
// every schema (valid ones, and ones a mutation or two away from valid),
// the fast validator says valid exactly when the library does. The fast
// path accepting what the library refuses would let bad input in.
func TestFastValidatorAgreesWithTheLibrary(t *testing.T) {
	set, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	n := 300
	if testing.Short() {
		n = 40
	}
	g := newGen(set)
	names := set.Names()
	sort.Strings(names)
	for _, name := range names {
		sch, fast := set.schemas[name], set.fast[name]
		valid := 0
		for i := range n {
			g.rnd = rand.New(rand.NewPCG(uint64(i), 7))
			doc := roundTrip(t, g.value(sch, 0))
			if i%2 == 1 {
				doc = g.mutate(doc, 0)
			}
			want := sch.Validate(doc) == nil
			if got := fast.check(doc); got != want {
				b, _ := json.Marshal(doc)
				t.Fatalf("%s: fast validator says %v, library %v (%v), for %s", name, got, want, sch.Validate(doc), b)
			}
			if want {
				valid++
			}
		}
		if valid == 0 {
			t.Logf("%s: no valid document generated", name)
		}
	}
}

// roundTrip gives v as the decoder of the wire gives it (json.Number).
func roundTrip(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// gen makes documents that follow a schema, most of the time.
type gen struct {
	rnd     *rand.Rand
	strings []string                        // candidates for patterns and formats
	fits    map[*jsonschema.Schema][]string // the candidates each string schema accepts
}

func newGen(set *Set) *gen {
	g := &gen{strings: []string{"", "x", "a b", "0", "-", "/", "/srv/x", "\x00", "amd64", "ubuntu", "noble", "ga-24.04",
		"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "not-a-uuid",
		"2026-11-30T19:00:00Z", "2026-11-30T19:00:00.123456+01:00", "2026-13-30T19:00:00Z", "yesterday",
		"52:54:00:12:34:56", "52-54-00-12-34-56", "10.0.0.0/24", "10.0.0.1", "fe80::1", "host-1", "Host_1",
		"http://rack:5248/x", "https://example.com", "ftp://x", strings.Repeat("a", 64), strings.Repeat("0", 64),
		strings.Repeat("z", 300), "UABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRSTUVWX", "héllo", "a\u00e9\u00e9"}, fits: map[*jsonschema.Schema][]string{}}
	for _, p := range []string{"rackplane/rack/", "rack/", "machine/", "volume/", "subnet/", "token/", "join-token/", "image/", "rp-"} {
		g.strings = append(g.strings, p+"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
	}
	g.strings = append(g.strings, "rackplane/region", "image/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/store",
		"rp-0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-ceph", "rack_0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b_boot",
		"os/ubuntu/noble", "preseed/default", "commissioning-script/lshw", "machine/node-1")
	// Every string a schema names (consts, enums, types) is a candidate.
	seen := map[*jsonschema.Schema]bool{}
	var walk func(s *jsonschema.Schema)
	walk = func(s *jsonschema.Schema) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		if s.Const != nil {
			if str, ok := (*s.Const).(string); ok {
				g.strings = append(g.strings, str)
			}
		}
		if s.Enum != nil {
			for _, v := range s.Enum.Values {
				if str, ok := v.(string); ok {
					g.strings = append(g.strings, str)
				}
			}
		}
		for _, x := range children(s) {
			walk(x)
		}
	}
	for _, n := range set.Names() {
		walk(set.schemas[n])
		g.strings = append(g.strings, n)
	}
	return g
}

func children(s *jsonschema.Schema) []*jsonschema.Schema {
	out := []*jsonschema.Schema{s.Ref, s.Not, s.If, s.Then, s.Else, s.PropertyNames, s.Items2020, s.Contains}
	out = append(out, s.AllOf...)
	out = append(out, s.AnyOf...)
	out = append(out, s.OneOf...)
	out = append(out, s.PrefixItems...)
	for _, p := range s.Properties {
		out = append(out, p)
	}
	for _, p := range s.PatternProperties {
		out = append(out, p)
	}
	if a, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
		out = append(out, a)
	}
	return slices.DeleteFunc(out, func(x *jsonschema.Schema) bool { return x == nil })
}

// merged collects what s and the schemas it applies in place (its $ref,
// allOf, one branch of oneOf or anyOf) say about an object's properties;
// the most specific schema of a property wins.
func (g *gen) merged(s *jsonschema.Schema, props map[string]*jsonschema.Schema, required map[string]bool, depth int) {
	if s == nil || depth > 8 {
		return
	}
	for name, p := range s.Properties {
		if _, ok := props[name]; !ok {
			props[name] = p
		}
	}
	for _, r := range s.Required {
		required[r] = true
	}
	for _, x := range s.AllOf {
		g.merged(x, props, required, depth+1)
	}
	if len(s.OneOf) > 0 {
		g.merged(s.OneOf[g.rnd.IntN(len(s.OneOf))], props, required, depth+1)
	}
	if len(s.AnyOf) > 0 {
		g.merged(s.AnyOf[g.rnd.IntN(len(s.AnyOf))], props, required, depth+1)
	}
	g.merged(s.Ref, props, required, depth+1)
}

func (g *gen) value(s *jsonschema.Schema, depth int) any {
	if depth > 12 {
		return nil
	}
	for s.Ref != nil && s.Types == nil && s.Const == nil && s.Enum == nil && len(s.Properties) == 0 {
		s = s.Ref
	}
	if s.Bool != nil {
		return g.any(depth)
	}
	if s.Const != nil && g.rnd.IntN(20) > 0 {
		return *s.Const
	}
	if s.Enum != nil && g.rnd.IntN(20) > 0 {
		return s.Enum.Values[g.rnd.IntN(len(s.Enum.Values))]
	}
	if len(s.OneOf) > 0 && len(s.Properties) == 0 && s.Types == nil {
		return g.value(s.OneOf[g.rnd.IntN(len(s.OneOf))], depth+1)
	}
	if len(s.AnyOf) > 0 && len(s.Properties) == 0 && s.Types == nil {
		return g.value(s.AnyOf[g.rnd.IntN(len(s.AnyOf))], depth+1)
	}
	types := []string{}
	for x := s; x != nil; x = x.Ref {
		if x.Types != nil {
			types = x.Types.ToStrings()
			break
		}
		if len(x.AllOf) > 0 && x.AllOf[0].Types != nil {
			types = x.AllOf[0].Types.ToStrings()
			break
		}
	}
	if len(types) == 0 {
		switch {
		case len(s.Properties) > 0 || len(s.AllOf) > 0:
			types = []string{"object"}
		case s.Pattern != nil || s.Format != nil || s.MaxLength != nil:
			types = []string{"string"}
		default:
			return g.any(depth)
		}
	}
	switch typ := types[g.rnd.IntN(len(types))]; typ {
	case "object":
		props, required := map[string]*jsonschema.Schema{}, map[string]bool{}
		g.merged(s, props, required, 0)
		obj := map[string]any{}
		names := make([]string, 0, len(props))
		for name := range props {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if required[name] || g.rnd.IntN(2) == 0 {
				obj[name] = g.value(props[name], depth+1)
			}
		}
		if a, ok := s.AdditionalProperties.(*jsonschema.Schema); ok && g.rnd.IntN(2) == 0 {
			key := g.str(s.PropertyNames)
			obj[key] = g.value(a, depth+1)
		}
		return obj
	case "array":
		n := g.rnd.IntN(4)
		if s.MinItems != nil {
			n = max(n, *s.MinItems)
		}
		if s.MaxItems != nil {
			n = min(n, *s.MaxItems)
		}
		arr := make([]any, n)
		for i := range arr {
			switch {
			case i < len(s.PrefixItems):
				arr[i] = g.value(s.PrefixItems[i], depth+1)
			case s.Items2020 != nil:
				arr[i] = g.value(s.Items2020, depth+1)
			default:
				arr[i] = g.any(depth + 1)
			}
		}
		return arr
	case "string":
		return g.str(s)
	case "integer", "number":
		lo, hi := int64(-3), int64(100)
		if s.Minimum != nil {
			lo = s.Minimum.Num().Int64()
		}
		if s.Maximum != nil {
			hi = s.Maximum.Num().Int64()
		}
		if hi < lo {
			hi = lo
		}
		n := lo + g.rnd.Int64N(hi-lo+1)
		if typ == "number" && g.rnd.IntN(3) == 0 {
			return json.Number(fmt.Sprintf("%d.5", n))
		}
		if g.rnd.IntN(10) == 0 {
			return json.Number(fmt.Sprintf("%d.0", n))
		}
		return n
	case "boolean":
		return g.rnd.IntN(2) == 0
	}
	return nil
}

// str returns a string s accepts when one of the candidates is.
func (g *gen) str(s *jsonschema.Schema) string {
	if s == nil {
		return g.strings[g.rnd.IntN(len(g.strings))]
	}
	ok, done := g.fits[s]
	if !done {
		for _, c := range g.strings {
			if s.Validate(c) == nil {
				ok = append(ok, c)
			}
		}
		g.fits[s] = ok
	}
	if len(ok) == 0 || g.rnd.IntN(10) == 0 {
		return g.strings[g.rnd.IntN(len(g.strings))]
	}
	return ok[g.rnd.IntN(len(ok))]
}

func (g *gen) any(depth int) any {
	switch g.rnd.IntN(7) {
	case 0:
		return nil
	case 1:
		return true
	case 2:
		return json.Number("1.5")
	case 3:
		return g.rnd.IntN(10)
	case 4:
		if depth < 6 {
			return []any{g.any(depth + 1)}
		}
	case 5:
		if depth < 6 {
			return map[string]any{g.str(nil): g.any(depth + 1)}
		}
	}
	return g.str(nil)
}

// mutate changes doc in one place: a value of another type or content,
// a key removed or added.
func (g *gen) mutate(doc any, depth int) any {
	switch v := doc.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		switch r := g.rnd.IntN(10); {
		case r == 0 || len(keys) == 0:
			v[g.str(nil)] = g.any(depth)
		case r == 1:
			delete(v, keys[g.rnd.IntN(len(keys))])
		default:
			k := keys[g.rnd.IntN(len(keys))]
			v[k] = g.mutate(v[k], depth+1)
		}
		return v
	case []any:
		if len(v) == 0 || g.rnd.IntN(4) == 0 {
			return append(v, g.any(depth))
		}
		i := g.rnd.IntN(len(v))
		v[i] = g.mutate(v[i], depth+1)
		return v
	case string:
		switch g.rnd.IntN(4) {
		case 0:
			return v + "!"
		case 1:
			return strings.ToUpper(v)
		case 2:
			return json.Number("7")
		}
		return g.str(nil)
	case json.Number:
		switch g.rnd.IntN(4) {
		case 0:
			return json.Number("-1")
		case 1:
			return json.Number("0")
		case 2:
			return json.Number("1e300")
		}
		return "1"
	}
	return g.any(depth)
}

// TestFastValidatorConcurrentUse: a Set is used by many goroutines at once
// (ingest, the API, rpc handlers); the fast validator's caches are safe
// for that (run with -race).
func TestFastValidatorConcurrentUse(t *testing.T) {
	set, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	doc := roundTrip(t, map[string]any{"specversion": "1.0", "id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"source": "rackplane/rack/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "type": "rackplane.rack.events_dropped.v1",
		"subject": "rack/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "time": "2026-11-30T19:00:00Z",
		"data": map[string]any{"count": 2, "since": "2026-11-30T18:00:00Z"}})
	done := make(chan error)
	for range 4 {
		go func() {
			for range 200 {
				if err := set.Validate("rackplane.rack.events_dropped.v1", doc); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
