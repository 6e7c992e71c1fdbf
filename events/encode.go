package events

import (
	"encoding/json"
	"time"
)

// appendEvent appends the JSON of e as json.Marshal writes it, or reports
// false when e holds something it leaves to json.Marshal: a string with a
// character json.Marshal escapes, data not already compact JSON free of
// the characters it escapes, a time json.Marshal refuses. Every event the
// code makes passes: its strings are ids, names and RFC 3339 times, its
// data json.Marshal's own output.
func appendEvent(b []byte, e *Event) ([]byte, bool) {
	b = append(b, `{"specversion":`...)
	var ok bool
	if b, ok = appendPlainString(b, e.SpecVersion); !ok {
		return b, false
	}
	for _, f := range [...]struct{ name, v string }{
		{`,"id":`, e.ID}, {`,"source":`, e.Source}, {`,"type":`, e.Type}, {`,"subject":`, e.Subject},
	} {
		b = append(b, f.name...)
		if b, ok = appendPlainString(b, f.v); !ok {
			return b, false
		}
	}
	b = append(b, `,"time":"`...)
	if b, ok = appendTime(b, e.Time); !ok {
		return b, false
	}
	b = append(b, '"')
	if e.DataContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		if b, ok = appendPlainString(b, e.DataContentType); !ok {
			return b, false
		}
	}
	b = append(b, `,"data":`...)
	switch {
	case e.Data == nil:
		b = append(b, "null"...)
	case compactJSON(e.Data):
		b = append(b, e.Data...)
	default:
		return b, false
	}
	for _, f := range [...]struct{ name, v string }{
		{`,"correlationid":`, e.CorrelationID}, {`,"causationid":`, e.CausationID}, {`,"actor":`, e.Actor},
	} {
		if f.v == "" {
			continue
		}
		b = append(b, f.name...)
		if b, ok = appendPlainString(b, f.v); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// appendPlainString appends s quoted, when json.Marshal would write it so:
// printable ASCII but the characters it escapes.
func appendPlainString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// plainByte holds the bytes json.Marshal writes as they are in a string,
// and that compaction leaves as they are in data, inside or outside its
// strings: printable ASCII but the quote, the backslash and the HTML
// characters <, > and &.
var plainByte = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = true
	}
	t[' '] = true
	t['"'], t['\\'], t['<'], t['>'], t['&'] = false, false, false, false, false
	return t
}()

// compactJSON reports whether data is valid JSON that json.Marshal copies
// as it is (a json.RawMessage is compacted, and its HTML characters and
// line separators escaped): no whitespace outside its strings, only
// printable ASCII but <, > and & anywhere, and escapes only where they
// belong.
func compactJSON(data []byte) bool {
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '"':
			inString = !inString
		case c == '\\':
			if !inString {
				return false
			}
			i++ // the escaped character cannot end the string
		case c == ' ':
			if !inString {
				return false
			}
		case !plainByte[c]:
			return false
		}
	}
	return !inString && json.Valid(data)
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds), or reports false when MarshalJSON refuses it: a year
// outside [0,9999], a zone offset of 24 hours or more.
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	switch {
	case len(b)-n0 < len("9999-") || b[n0+len("9999")] != '-':
		return b, false
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		h := b[len(b)-len("07:00"):]
		if '0' <= c && c <= '9' || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			return b, false
		}
	}
	return b, true
}
