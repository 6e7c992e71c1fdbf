package events

import (
	"encoding/json"
	"errors"
	"strconv"
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
	p := parser{b: raw}
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

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

var errSyntax = errors.New("not JSON")

type parser struct {
	b    []byte
	i    int
	data []byte // the top-level object's data member
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
		return p.string()
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
	obj := map[string]any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return obj, nil
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, errSyntax
		}
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, errSyntax
		}
		p.i++
		p.space()
		start := p.i
		v, err := p.value(depth, false)
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
	arr := []any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return arr, nil
	}
	for {
		v, err := p.value(depth, false)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, errSyntax
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case ']':
			p.i++
			return arr, nil
		default:
			return nil, errSyntax
		}
	}
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
	return json.Number(p.b[start:p.i]), nil
}

// string reads a string at p.b[p.i] (a quote). Like encoding/json, it
// turns invalid UTF-8 and lone surrogates into U+FFFD.
func (p *parser) string() (string, error) {
	p.i++ // "
	start := p.i
	plain := true // no escapes, valid UTF-8: the bytes are the string
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if plain {
				return string(s), nil
			}
			return unquote(s)
		case c == '\\':
			plain = false
			p.i += 2
		case c < 0x20:
			return "", errSyntax
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
	return "", errSyntax
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
