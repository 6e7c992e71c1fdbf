package api

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
)

// The machine responses are the API's busiest, a list page a hundred
// machines long: they are written by hand here rather than by
// encoding/json's reflection and its second pass for the indentation.
// The bytes are those writeJSON writes for the same value (field order,
// omitempty, escaping, indentation, the closing newline), which
// TestMachineJSON checks against encoding/json.

// jsonBufs keeps the buffers responses are built in: a list page is tens
// of kilobytes, not worth making anew for each request.
var jsonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeRawJSON writes a response built by build, in one write.
func writeRawJSON(w http.ResponseWriter, status int, build func([]byte) []byte) error {
	bp := jsonBufs.Get().(*[]byte)
	b := build((*bp)[:0])
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err := w.Write(b)
	if cap(b) <= 1<<20 {
		*bp = b
		jsonBufs.Put(bp)
	}
	return err
}

// appendMachinesPage is a page of the machine list: {"machines": […],
// "next": …}, as writeJSON writes the map.
func appendMachinesPage(b []byte, ms []rackplane.Machine, next string) []byte {
	b = append(b, "{\n  \"machines\": ["...)
	for i := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    "...)
		b = appendMachine(b, &ms[i], "\n    ")
	}
	if len(ms) > 0 {
		b = append(b, "\n  "...)
	}
	b = append(b, "],\n  \"next\": "...)
	b = appendJSONString(b, next)
	return append(b, "\n}\n"...)
}

// appendMachine appends m as an object whose lines after the first
// begin with nl (a newline and the object's own indentation).
func appendMachine(b []byte, m *rackplane.Machine, nl string) []byte {
	in := indented(nl)
	first := true
	key := func(k string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, in...)
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, "\": "...)
	}
	str := func(k, v string) {
		key(k)
		b = appendJSONString(b, v)
	}
	optStr := func(k, v string) {
		if v != "" {
			str(k, v)
		}
	}
	optTime := func(k string, t *time.Time) {
		if t != nil {
			key(k)
			b = appendJSONTime(b, *t)
		}
	}
	b = append(b, '{')
	str("id", m.ID)
	str("hostname", m.Hostname)
	key("macs")
	b = appendJSONStrings(b, m.MACs, in)
	str("arch", m.Arch)
	key("boot_rack_id")
	if m.BootRackID == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *m.BootRackID)
	}
	optStr("boot_file", m.BootFile)
	str("status", m.Status)
	optStr("status_reason", m.StatusReason)
	str("origin", m.Origin)
	optStr("os", m.OS)
	optStr("release", m.Release)
	optStr("subarch", m.Subarch)
	optStr("image_version_id", m.ImageVersionID)
	if m.DeployRackID != nil {
		str("deploy_rack_id", *m.DeployRackID)
	}
	optStr("preseed_name", m.PreseedName)
	if m.PreseedVersion != 0 {
		key("preseed_version")
		b = strconv.AppendInt(b, m.PreseedVersion, 10)
	}
	if m.DeploymentID != nil {
		str("deployment_id", *m.DeploymentID)
	}
	optTime("deploy_started_at", m.DeployStartedAt)
	optTime("deployed_at", m.DeployedAt)
	str("power_state", m.PowerState)
	optTime("power_checked_at", m.PowerCheckedAt)
	optStr("power_outcome", m.PowerOutcome)
	optStr("power_error", m.PowerError)
	key("created_at")
	b = appendJSONTime(b, m.CreatedAt)
	key("updated_at")
	b = appendJSONTime(b, m.UpdatedAt)
	key("tags")
	b = appendJSONStrings(b, m.Tags, in)
	if h := m.Hardware; h != nil {
		key("hardware")
		hin := in + "  "
		b = append(b, '{')
		for i, f := range [...]struct {
			k string
			v int64
		}{{"cores", int64(h.Cores)}, {"threads", int64(h.Threads)}, {"memory_bytes", h.MemoryBytes}, {"disks", int64(h.Disks)}, {"disk_bytes", h.DiskBytes}} {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, hin...)
			b = append(b, '"')
			b = append(b, f.k...)
			b = append(b, "\": "...)
			b = strconv.AppendInt(b, f.v, 10)
		}
		b = append(b, ',')
		b = append(b, hin...)
		b = append(b, "\"firmware\": "...)
		b = appendJSONString(b, h.Firmware)
		b = append(b, in...)
		b = append(b, '}')
	}
	key("version")
	b = strconv.AppendInt(b, m.Version, 10)
	key("actions")
	b = appendJSONStrings(b, m.Actions, in)
	b = append(b, nl...)
	return append(b, '}')
}

// indented is nl and two spaces more: the two indentations machines are
// written at are made once.
func indented(nl string) string {
	switch nl {
	case "\n":
		return "\n  "
	case "\n    ":
		return "\n      "
	}
	return nl + "  "
}

// appendJSONStrings appends a list of strings (null when nil) whose
// closing bracket goes on a line beginning with nl.
func appendJSONStrings(b []byte, ss []string, nl string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	if len(ss) == 0 {
		return append(b, "[]"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, nl...)
		b = append(b, "  "...)
		b = appendJSONString(b, s)
	}
	b = append(b, nl...)
	return append(b, ']')
}

// appendJSONTime appends t as time.Time.MarshalJSON does.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// plainASCII tells the ASCII bytes appendJSONString copies as they are.
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s quoted as encoding/json quotes it by
// default: ", \ and control characters escaped, <, > and & escaped for
// HTML, U+2028 and U+2029 escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
