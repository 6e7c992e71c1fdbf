package schema

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// A fastSchema answers only "valid or not", for the keywords the contract
// uses, without building the error tree and per-keyword state the library
// validator allocates for every subschema it enters: on the region's
// ingest path that was most of the cost of an event. It is compiled once
// from the library's compiled schema, so $ref resolution, formats and
// patterns are the library's own. A schema using any keyword it does not
// implement gets no fastSchema, and a document it finds invalid is
// validated again by the library, whose verdict (and error) stands: the
// fast path can only ever say yes sooner.
type fastSchema struct {
	check func(v any) bool
}

// errUnsupported says a schema uses a keyword fastSchema does not
// implement; the library validates it instead.
type errUnsupported struct{ what, where string }

func (e *errUnsupported) Error() string {
	return fmt.Sprintf("%s at %s: not supported by the fast validator", e.what, e.where)
}

// compileFast compiles s and everything it refers to. Schemas that refer
// to themselves (directly or not) compile to checks that call each other
// through memo.
func compileFast(s *jsonschema.Schema, memo map[*jsonschema.Schema]*fastSchema) (*fastSchema, error) {
	if f, ok := memo[s]; ok {
		return f, nil
	}
	f := &fastSchema{}
	memo[s] = f
	checks, err := fastChecks(s, memo)
	if err != nil {
		return nil, err
	}
	switch len(checks) {
	case 0:
		f.check = func(any) bool { return true }
	case 1:
		f.check = checks[0]
	default:
		f.check = func(v any) bool {
			for _, c := range checks {
				if !c(v) {
					return false
				}
			}
			return true
		}
	}
	return f, nil
}

func unsupported(s *jsonschema.Schema) string {
	switch {
	case s.DraftVersion < 2020:
		return "draft " + strconv.Itoa(s.DraftVersion)
	case s.RecursiveRef != nil, s.DynamicRef != nil:
		return "dynamic reference"
	case s.UnevaluatedProperties != nil, s.UnevaluatedItems != nil:
		return "unevaluated keywords"
	case len(s.Extensions) > 0:
		return "extension vocabulary"
	case s.ContentEncoding != nil, s.ContentMediaType != nil, s.ContentSchema != nil:
		return "content keywords"
	case len(s.Dependencies) > 0:
		return "dependencies"
	case s.Format != nil && s.Format.Name == "regex":
		return "format regex"
	}
	return ""
}

func fastChecks(s *jsonschema.Schema, memo map[*jsonschema.Schema]*fastSchema) ([]func(any) bool, error) {
	if s.Bool != nil {
		b := *s.Bool
		return []func(any) bool{func(any) bool { return b }}, nil
	}
	if what := unsupported(s); what != "" {
		return nil, &errUnsupported{what, s.Location}
	}
	sub := func(x *jsonschema.Schema) (func(any) bool, error) {
		f, err := compileFast(x, memo)
		if err != nil {
			return nil, err
		}
		return func(v any) bool { return f.check(v) }, nil
	}
	subs := func(xs []*jsonschema.Schema) ([]func(any) bool, error) {
		out := make([]func(any) bool, len(xs))
		for i, x := range xs {
			f, err := sub(x)
			if err != nil {
				return nil, err
			}
			out[i] = f
		}
		return out, nil
	}
	var checks []func(any) bool
	add := func(c func(any) bool) { checks = append(checks, c) }

	if s.Types != nil && !s.Types.IsEmpty() {
		var want kind
		for _, t := range s.Types.ToStrings() {
			want |= kindOf(t)
		}
		add(func(v any) bool {
			k := jsonKind(v)
			return want&k != 0 || (k == kindNumber && want&kindInteger != 0 && isInteger(v))
		})
	}
	if s.Const != nil {
		c := *s.Const
		add(func(v any) bool { return equal(v, c) })
	}
	if s.Enum != nil {
		vals := s.Enum.Values
		add(func(v any) bool {
			for _, e := range vals {
				if equal(v, e) {
					return true
				}
			}
			return false
		})
	}
	if s.Format != nil {
		validate := s.Format.Validate
		if sure := sureFormats[s.Format.Name]; sure != nil {
			add(func(v any) bool {
				if x, ok := v.(string); ok && sure(x) {
					return true
				}
				return validate(v) == nil
			})
		} else {
			add(func(v any) bool { return validate(v) == nil })
		}
	}
	if s.Ref != nil {
		f, err := sub(s.Ref)
		if err != nil {
			return nil, err
		}
		add(f)
	}
	obj, err := objectChecks(s, sub)
	if err != nil {
		return nil, err
	}
	if obj != nil {
		add(func(v any) bool {
			m, ok := v.(map[string]any)
			return !ok || obj(m)
		})
	}
	arr, err := arrayChecks(s, sub)
	if err != nil {
		return nil, err
	}
	if arr != nil {
		add(func(v any) bool {
			a, ok := v.([]any)
			return !ok || arr(a)
		})
	}
	if str := stringChecks(s); str != nil {
		add(func(v any) bool {
			x, ok := v.(string)
			return !ok || str(x)
		})
	}
	if num := numberChecks(s); num != nil {
		add(func(v any) bool {
			n, ok := v.(json.Number)
			if !ok {
				// Only the decoder's json.Number is handled; anything
				// else goes to the library.
				return jsonKind(v) != kindNumber
			}
			return num(n)
		})
	}
	if s.Not != nil {
		f, err := sub(s.Not)
		if err != nil {
			return nil, err
		}
		add(func(v any) bool { return !f(v) })
	}
	if len(s.AllOf) > 0 {
		fs, err := subs(s.AllOf)
		if err != nil {
			return nil, err
		}
		checks = append(checks, fs...)
	}
	if len(s.AnyOf) > 0 {
		fs, err := subs(s.AnyOf)
		if err != nil {
			return nil, err
		}
		add(func(v any) bool {
			for _, f := range fs {
				if f(v) {
					return true
				}
			}
			return false
		})
	}
	if len(s.OneOf) > 0 {
		fs, err := subs(s.OneOf)
		if err != nil {
			return nil, err
		}
		add(func(v any) bool {
			n := 0
			for _, f := range fs {
				if f(v) {
					if n++; n > 1 {
						return false
					}
				}
			}
			return n == 1
		})
	}
	if s.If != nil {
		cond, err := sub(s.If)
		if err != nil {
			return nil, err
		}
		then, els := func(any) bool { return true }, func(any) bool { return true }
		if s.Then != nil {
			if then, err = sub(s.Then); err != nil {
				return nil, err
			}
		}
		if s.Else != nil {
			if els, err = sub(s.Else); err != nil {
				return nil, err
			}
		}
		add(func(v any) bool {
			if cond(v) {
				return then(v)
			}
			return els(v)
		})
	}
	// The library treats every value this decoder cannot produce as
	// invalid; so does the fast path.
	add(func(v any) bool { return jsonKind(v) != 0 })
	return checks, nil
}

type compileSub func(*jsonschema.Schema) (func(any) bool, error)

func objectChecks(s *jsonschema.Schema, sub compileSub) (func(map[string]any) bool, error) {
	type patternProp struct {
		re    jsonschema.Regexp
		check func(any) bool
	}
	props := map[string]func(any) bool{}
	for name, ps := range s.Properties {
		f, err := sub(ps)
		if err != nil {
			return nil, err
		}
		props[name] = f
	}
	var patterns []patternProp
	for re, ps := range s.PatternProperties {
		f, err := sub(ps)
		if err != nil {
			return nil, err
		}
		patterns = append(patterns, patternProp{re, f})
	}
	var additional func(any) bool
	switch a := s.AdditionalProperties.(type) {
	case nil:
	case bool:
		if !a {
			additional = func(any) bool { return false }
		}
	case *jsonschema.Schema:
		f, err := sub(a)
		if err != nil {
			return nil, err
		}
		additional = f
	default:
		return nil, &errUnsupported{fmt.Sprintf("additionalProperties %T", a), s.Location}
	}
	var propertyNames func(any) bool
	if s.PropertyNames != nil {
		f, err := sub(s.PropertyNames)
		if err != nil {
			return nil, err
		}
		propertyNames = f
	}
	dependentSchemas := map[string]func(any) bool{}
	for name, ds := range s.DependentSchemas {
		f, err := sub(ds)
		if err != nil {
			return nil, err
		}
		dependentSchemas[name] = f
	}
	minProps, maxProps := -1, -1
	if s.MinProperties != nil {
		minProps = *s.MinProperties
	}
	if s.MaxProperties != nil {
		maxProps = *s.MaxProperties
	}
	required, dependentRequired := s.Required, s.DependentRequired
	if len(props) == 0 && len(patterns) == 0 && additional == nil && propertyNames == nil &&
		len(dependentSchemas) == 0 && len(dependentRequired) == 0 && len(required) == 0 && minProps < 0 && maxProps < 0 {
		return nil, nil
	}
	return func(m map[string]any) bool {
		if minProps >= 0 && len(m) < minProps || maxProps >= 0 && len(m) > maxProps {
			return false
		}
		for _, r := range required {
			if _, ok := m[r]; !ok {
				return false
			}
		}
		for name, v := range m {
			evaluated := false
			if f, ok := props[name]; ok {
				if !f(v) {
					return false
				}
				evaluated = true
			}
			for _, p := range patterns {
				if p.re.MatchString(name) {
					if !p.check(v) {
						return false
					}
					evaluated = true
				}
			}
			if !evaluated && additional != nil && !additional(v) {
				return false
			}
			if propertyNames != nil && !propertyNames(name) {
				return false
			}
		}
		for name, f := range dependentSchemas {
			if _, ok := m[name]; ok && !f(m) {
				return false
			}
		}
		for name, reqd := range dependentRequired {
			if _, ok := m[name]; ok {
				for _, r := range reqd {
					if _, ok := m[r]; !ok {
						return false
					}
				}
			}
		}
		return true
	}, nil
}

func arrayChecks(s *jsonschema.Schema, sub compileSub) (func([]any) bool, error) {
	if s.Items != nil || s.AdditionalItems != nil {
		return nil, &errUnsupported{"items of drafts before 2020-12", s.Location}
	}
	prefix := make([]func(any) bool, len(s.PrefixItems))
	for i, ps := range s.PrefixItems {
		f, err := sub(ps)
		if err != nil {
			return nil, err
		}
		prefix[i] = f
	}
	var items, contains func(any) bool
	var err error
	if s.Items2020 != nil {
		if items, err = sub(s.Items2020); err != nil {
			return nil, err
		}
	}
	if s.Contains != nil {
		if contains, err = sub(s.Contains); err != nil {
			return nil, err
		}
	}
	minItems, maxItems, minContains, maxContains := -1, -1, -1, -1
	if s.MinItems != nil {
		minItems = *s.MinItems
	}
	if s.MaxItems != nil {
		maxItems = *s.MaxItems
	}
	if s.MinContains != nil {
		minContains = *s.MinContains
	}
	if s.MaxContains != nil {
		maxContains = *s.MaxContains
	}
	unique := s.UniqueItems
	if len(prefix) == 0 && items == nil && contains == nil && minItems < 0 && maxItems < 0 && !unique {
		return nil, nil
	}
	return func(a []any) bool {
		if minItems >= 0 && len(a) < minItems || maxItems >= 0 && len(a) > maxItems {
			return false
		}
		if unique {
			for i := 1; i < len(a); i++ {
				for j := range i {
					if equal(a[i], a[j]) {
						return false
					}
				}
			}
		}
		for i, v := range a {
			if i < len(prefix) {
				if !prefix[i](v) {
					return false
				}
			} else if items != nil && !items(v) {
				return false
			}
		}
		if contains != nil {
			n := 0
			for _, v := range a {
				if contains(v) {
					n++
				}
			}
			if minContains >= 0 {
				if n < minContains {
					return false
				}
			} else if n == 0 {
				return false
			}
			if maxContains >= 0 && n > maxContains {
				return false
			}
		}
		return true
	}, nil
}

func stringChecks(s *jsonschema.Schema) func(string) bool {
	minLen, maxLen := -1, -1
	if s.MinLength != nil {
		minLen = *s.MinLength
	}
	if s.MaxLength != nil {
		maxLen = *s.MaxLength
	}
	pattern := s.Pattern
	if minLen < 0 && maxLen < 0 && pattern == nil {
		return nil
	}
	var matched *matchCache
	if pattern != nil {
		matched = &matchCache{seen: map[string]struct{}{}}
	}
	return func(x string) bool {
		// Lengths are in characters, as the library counts them; a
		// string's byte length bounds its count, which is often enough.
		n := -1
		count := func() int {
			if n < 0 {
				n = utf8.RuneCountInString(x)
			}
			return n
		}
		if minLen >= 0 && (len(x) < minLen || count() < minLen) {
			return false
		}
		if maxLen >= 0 && len(x) > maxLen && count() > maxLen {
			return false
		}
		return pattern == nil || matched.match(pattern, x)
	}
}

// matchCache remembers strings a pattern matched. A rack's events repeat
// their source, subject and type, and many values of their data, so each
// is matched once rather than once per event. It is bounded: once full,
// what it does not hold is matched every time.
type matchCache struct {
	mu   sync.RWMutex
	seen map[string]struct{}
}

const (
	matchCacheEntries = 256
	matchCacheLen     = 128 // longer strings are not remembered
)

func (c *matchCache) match(re jsonschema.Regexp, s string) bool {
	keep := len(s) <= matchCacheLen
	if keep {
		c.mu.RLock()
		_, ok := c.seen[s]
		c.mu.RUnlock()
		if ok {
			return true
		}
	}
	if !re.MatchString(s) {
		return false
	}
	if keep {
		c.mu.Lock()
		if len(c.seen) < matchCacheEntries {
			c.seen[s] = struct{}{}
		}
		c.mu.Unlock()
	}
	return true
}

func numberChecks(s *jsonschema.Schema) func(json.Number) bool {
	lo, hi, xlo, xhi, mul := s.Minimum, s.Maximum, s.ExclusiveMinimum, s.ExclusiveMaximum, s.MultipleOf
	if lo == nil && hi == nil && xlo == nil && xhi == nil && mul == nil {
		return nil
	}
	rat := func(n json.Number) bool {
		r, ok := toRat(n)
		if !ok {
			return false
		}
		switch {
		case lo != nil && r.Cmp(lo) < 0, hi != nil && r.Cmp(hi) > 0,
			xlo != nil && r.Cmp(xlo) <= 0, xhi != nil && r.Cmp(xhi) >= 0:
			return false
		case mul != nil && !new(big.Rat).Quo(r, mul).IsInt():
			return false
		}
		return true
	}
	// Bounds that are all integers (the contract's are) compare with an
	// integer number as integers, without math/big's allocations.
	ilo, okLo := int64Of(lo)
	ihi, okHi := int64Of(hi)
	ixlo, okXlo := int64Of(xlo)
	ixhi, okXhi := int64Of(xhi)
	imul, okMul := int64Of(mul)
	if !okLo || !okHi || !okXlo || !okXhi || !okMul || mul != nil && imul <= 0 {
		return rat
	}
	return func(n json.Number) bool {
		i, ok := integerOf(n)
		if !ok {
			return rat(n)
		}
		switch {
		case lo != nil && i < ilo, hi != nil && i > ihi, xlo != nil && i <= ixlo, xhi != nil && i >= ixhi:
			return false
		case mul != nil && i%imul != 0:
			return false
		}
		return true
	}
}

// int64Of is r as an int64: true for nil (no bound), false when r is not
// an integer of that range.
func int64Of(r *big.Rat) (int64, bool) {
	if r == nil {
		return 0, true
	}
	if !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

// integerOf reads n when it is written as an integer (digits, maybe a
// minus) of at most 18 digits, which an int64 holds.
func integerOf(n json.Number) (int64, bool) {
	s := string(n)
	digits := strings.TrimPrefix(s, "-")
	if len(digits) == 0 || len(digits) > 18 {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	i, err := strconv.ParseInt(s, 10, 64)
	return i, err == nil
}

// sureFormats are, by format name, checks of a string that only say yes
// when the library's format says yes too, without its allocations; any
// other string is left to the library.
var sureFormats = map[string]func(string) bool{
	"uuid":      sureUUID,
	"date-time": sureDateTime,
}

// sureUUID: 8-4-4-4-12 hex digits, either case: exactly the library's
// uuid.
func sureUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// sureDateTime: yyyy-mm-ddThh:mm:ss, a fraction of a second maybe, and Z
// or an offset ±hh:mm, every field of digits and in its range (the day in
// its month, no leap second): the date-times the library accepts but
// those with a leap second, a lower case z or t, or fields the library
// reads with strconv.Atoi in more ways (a sign).
func sureDateTime(s string) bool {
	if len(s) < len("2006-01-02T15:04:05Z") {
		return false
	}
	num := func(i, n int) (int, bool) {
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 2)
	d, ok3 := num(8, 2)
	h, ok4 := num(11, 2)
	mi, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
		s[13] != ':' || s[16] != ':' || mo < 1 || mo > 12 || d < 1 || d > daysIn(mo, y) || h > 23 || mi > 59 || sec > 59 {
		return false
	}
	rest := s[19:]
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	if rest == "Z" {
		return true
	}
	if len(rest) != 6 || rest[0] != '+' && rest[0] != '-' || rest[3] != ':' {
		return false
	}
	zh, ok1 := num(len(s)-5, 2)
	zm, ok2 := num(len(s)-2, 2)
	return ok1 && ok2 && zh <= 23 && zm <= 59
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// smallInts holds the rationals of small integers, the common numbers of
// events (counts, sizes, ids), so that comparing them allocates nothing.
var smallInts = func() [1025]*big.Rat {
	var out [1025]*big.Rat
	for i := range out {
		out[i] = big.NewRat(int64(i), 1)
	}
	return out
}()

func toRat(n json.Number) (*big.Rat, bool) {
	s := string(n)
	if len(s) <= 4 && !strings.ContainsAny(s, ".eE-") {
		if i, err := strconv.Atoi(s); err == nil && i >= 0 && i < len(smallInts) {
			return smallInts[i], true
		}
	}
	return new(big.Rat).SetString(s)
}

// kind is a set of JSON types, as bits.
type kind uint8

const (
	kindNull kind = 1 << iota
	kindBoolean
	kindNumber
	kindInteger // only in a schema's types: numbers of integral value
	kindString
	kindArray
	kindObject
)

func kindOf(typ string) kind {
	switch typ {
	case "null":
		return kindNull
	case "boolean":
		return kindBoolean
	case "number":
		return kindNumber
	case "integer":
		return kindInteger
	case "string":
		return kindString
	case "array":
		return kindArray
	case "object":
		return kindObject
	}
	return 0
}

// jsonKind is the JSON type of a decoded value as the library sees it,
// or 0 for a value no JSON decoder produces.
func jsonKind(v any) kind {
	switch v.(type) {
	case nil:
		return kindNull
	case bool:
		return kindBoolean
	case json.Number, float32, float64, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return kindNumber
	case string:
		return kindString
	case []any:
		return kindArray
	case map[string]any:
		return kindObject
	}
	return 0
}

func isInteger(v any) bool {
	if n, ok := v.(json.Number); ok {
		s := string(n)
		if !strings.ContainsAny(s, ".eE") {
			return true // the decoder's grammar: digits, maybe a minus
		}
	}
	r, ok := new(big.Rat).SetString(fmt.Sprint(v))
	return ok && r.IsInt()
}

// equal is the library's equality of JSON values: numbers by value, so
// 1, 1.0 and 1e0 are equal.
func equal(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, va := range a {
			vb, ok := b[k]
			if !ok || !equal(va, vb) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case nil:
		return b == nil
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	case string:
		b, ok := b.(string)
		return ok && a == b
	}
	if jsonKind(a) != kindNumber || jsonKind(b) != kindNumber {
		return false
	}
	if na, ok := a.(json.Number); ok {
		if nb, ok := b.(json.Number); ok && na == nb {
			return true
		}
	}
	ra, ok1 := new(big.Rat).SetString(fmt.Sprint(a))
	rb, ok2 := new(big.Rat).SetString(fmt.Sprint(b))
	return ok1 && ok2 && ra.Cmp(rb) == 0
}
