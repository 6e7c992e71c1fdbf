package events

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// parseJSON parses raw, one JSON value, into what the schema validator
// takes (maps, slices, strings, json.Number, bools, nil), exactly as
// encoding/json with UseNumber does, in one pass: encoding/json scans the
// bytes once to check them and again to decode them. When raw is an
// object it also returns the bytes of its member named data (the last
// such, as a decoder keeps), which become the Event's Data without
// reading raw again. An error is only a hint: Decode asks encoding/json
// again for the message it records, and takes that decoder's word.
func parseJSON(raw []byte) (doc any, data []byte, err error) {
	var p parser
	return p.parse(raw)
}

// parse is parseJSON with p's memory: the maps it made for earlier
// parses and gave back (recycle), its interned names and values.
func (p *parser) parse(raw []byte) (doc any, data []byte, err error) {
	p.b, p.i, p.data = raw, 0, nil
	p.space()
	doc, err = p.value(0, true)
	if err != nil {
		return nil, nil, err
	}
	p.space()
	if p.i != len(p.b) {
		return nil, nil, errors.New("data after the JSON value")
	}
	return doc, p.data, nil
}

// parsers keep their memory from one Decode to the next.
var parsers = sync.Pool{New: func() any { return new(parser) }}

// recycle empties the maps of the last parse for the next ones: only
// once nothing holds the document (it passed its schema, and the Event
// holds nothing of it but strings).
func (p *parser) recycle() {
	for _, m := range p.made {
		if len(m) <= maxRecycledMap && len(p.free) < maxFreeMaps {
			clear(m)
			p.free = append(p.free, m)
		}
	}
	p.forget()
}

// forget drops what p holds of the last parse, whose document is still
// held (it was refused: its error may refer to it).
func (p *parser) forget() {
	clear(p.made)
	p.made = p.made[:0]
	p.b, p.data = nil, nil
	if cap(p.stack) > maxStack {
		p.stack = nil // a message of a long array is no reason to keep its room
	}
}

const (
	maxRecycledMap = 64  // members: a larger map is left to the collector
	maxFreeMaps    = 32  // maps kept for the next parses
	maxInterned    = 512 // names and values; the table starts again when full
	maxInternLen   = 96  // longer strings are not interned
	maxStack       = 4096
)

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

var errSyntax = errors.New("not JSON")

type parser struct {
	b    []byte
	i    int
	data []byte // the top-level object's data member

	made  []map[string]any // the maps of this parse
	free  []map[string]any // emptied maps of earlier parses
	stack []any            // the elements of the arrays being read
	// interned holds, boxed once, the strings an event repeats: member
	// names and the envelope's values but its id and time (a rack's
	// events share their source, subject and type).
	interned map[string]any
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int, top bool) (any, error) {
	if p.i >= len(p.b) {
		return nil, errSyntax
	}
	switch c := p.b[p.i]; {
	case c == '{':
		if depth >= maxDepth {
			return nil, errSyntax
		}
		return p.object(depth+1, top)
	case c == '[':
		if depth >= maxDepth {
			return nil, errSyntax
		}
		return p.array(depth + 1)
	case c == '"':
		return p.stringValue(false)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, errSyntax
}

func (p *parser) literal(word string) error {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return errSyntax
	}
	p.i += len(word)
	return nil
}

func (p *parser) object(depth int, top bool) (any, error) {
	p.i++ // {
	obj := p.newMap()
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return obj, nil
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, errSyntax
		}
		k, err := p.stringValue(true)
		if err != nil {
			return nil, err
		}
		key := k.(string)
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, errSyntax
		}
		p.i++
		p.space()
		start := p.i
		var v any
		if top && p.i < len(p.b) && p.b[p.i] == '"' && key != "id" && key != "time" {
			v, err = p.stringValue(true)
		} else {
			v, err = p.value(depth, false)
		}
		if err != nil {
			return nil, err
		}
		if top && key == "data" {
			p.data = p.b[start:p.i:p.i]
		}
		obj[key] = v
		p.space()
		if p.i >= len(p.b) {
			return nil, errSyntax
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case '}':
			p.i++
			return obj, nil
		default:
			return nil, errSyntax
		}
	}
}

func (p *parser) array(depth int) (any, error) {
	p.i++ // [
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return []any{}, nil
	}
	// The elements wait on the stack, shared by the arrays being read
	// (nested ones above), and are copied once into a slice of their
	// number.
	base := len(p.stack)
	for {
		v, err := p.value(depth, false)
		if err != nil {
			clear(p.stack[base:])
			p.stack = p.stack[:base]
			return nil, err
		}
		p.stack = append(p.stack, v)
		p.space()
		if p.i >= len(p.b) {
			clear(p.stack[base:])
			p.stack = p.stack[:base]
			return nil, errSyntax
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case ']':
			p.i++
			arr := make([]any, len(p.stack)-base)
			copy(arr, p.stack[base:])
			clear(p.stack[base:])
			p.stack = p.stack[:base]
			return arr, nil
		default:
			clear(p.stack[base:])
			p.stack = p.stack[:base]
			return nil, errSyntax
		}
	}
}

func (p *parser) newMap() map[string]any {
	var m map[string]any
	if n := len(p.free); n > 0 {
		m = p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
	} else {
		m = make(map[string]any)
	}
	p.made = append(p.made, m)
	return m
}

// stringValue reads a string at p.b[p.i] (a quote), boxed; interned when
// intern is set and it has no escapes.
func (p *parser) stringValue(intern bool) (any, error) {
	s, plain, err := p.stringBytes()
	if err != nil {
		return nil, err
	}
	if !plain {
		return unquote(s)
	}
	if !intern || len(s) > maxInternLen {
		return string(s), nil
	}
	if v, ok := p.interned[string(s)]; ok {
		return v, nil
	}
	if p.interned == nil || len(p.interned) >= maxInterned {
		p.interned = make(map[string]any)
	}
	str := string(s)
	v := any(str)
	p.interned[str] = v
	return v, nil
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (p *parser) number() (any, error) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return nil, errSyntax
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, errSyntax
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, errSyntax
		}
	}
	if n := p.b[start:p.i]; len(n) <= 3 && (len(n) == 1 || n[0] != '0') {
		if i, ok := smallInt(n); ok {
			return smallNumbers[i], nil
		}
	}
	return json.Number(p.b[start:p.i]), nil
}

// smallNumbers are the json.Numbers of 0 to 999, boxed once: counts and
// sizes of events are mostly small.
var smallNumbers = func() (out [1000]any) {
	for i := range out {
		out[i] = json.Number(strconv.Itoa(i))
	}
	return out
}()

// smallInt reads n, up to three digits without a sign.
func smallInt(n []byte) (int, bool) {
	v := 0
	for _, c := range n {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// stringBytes reads a string at p.b[p.i] (a quote) and returns its bytes
// between the quotes, and whether they are the string as they are (no
// escapes, valid UTF-8); else unquote decodes them. Like encoding/json,
// that turns invalid UTF-8 and lone surrogates into U+FFFD.
func (p *parser) stringBytes() (s []byte, plain bool, err error) {
	p.i++ // "
	start := p.i
	plain = true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, plain, nil
		case c == '\\':
			plain = false
			p.i += 2
		case c < 0x20:
			return nil, false, errSyntax
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				plain = false
			}
			p.i += size
		}
	}
	return nil, false, errSyntax
}

// unquote decodes the inside of a string with escapes or invalid UTF-8,
// as encoding/json does.
func unquote(s []byte) (string, error) {
	out := make([]byte, 0, len(s)+2*utf8.UTFMax)
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			r++
			if r >= len(s) {
				return "", errSyntax
			}
			switch s[r] {
			case '"', '\\', '/':
				out = append(out, s[r])
				r++
			case 'b':
				out = append(out, '\b')
				r++
			case 'f':
				out = append(out, '\f')
				r++
			case 'n':
				out = append(out, '\n')
				r++
			case 'r':
				out = append(out, '\r')
				r++
			case 't':
				out = append(out, '\t')
				r++
			case 'u':
				r--
				rr := getu4(s[r:])
				if rr < 0 {
					return "", errSyntax
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := getu4(s[r:])
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						out = utf8.AppendRune(out, dec)
						break
					}
					rr = unicode.ReplacementChar
				}
				out = utf8.AppendRune(out, rr)
			default:
				return "", errSyntax
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			out = utf8.AppendRune(out, rr)
		}
	}
	return string(out), nil
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	v, err := strconv.ParseUint(string(s[2:6]), 16, 16)
	if err != nil {
		return -1
	}
	return rune(v)
}
