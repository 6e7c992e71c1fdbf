package httpserver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
)

// CheckText returns an EINVALID error naming where r's path or query
// holds a NUL or bytes that are not UTF-8, or nil. Such text cannot be a
// name, an id or a filter of anything: PostgreSQL refuses it, and a file
// name with a NUL is cut short by the system.
func CheckText(r *http.Request) error {
	if !goodText(r.URL.Path) {
		return rackplane.Errorf(rackplane.EINVALID, "the path holds a NUL or bytes that are not UTF-8: send UTF-8 without NULs, percent-encoded")
	}
	// Pair by pair as url.ParseQuery reads them, but a pair it drops (a bad
	// escape, a semicolon) is no reason to refuse here: handlers never see
	// it.
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			continue
		}
		v, err = url.QueryUnescape(v)
		if err != nil {
			continue
		}
		if !goodText(k) {
			return rackplane.Errorf(rackplane.EINVALID, "a query parameter name holds a NUL or bytes that are not UTF-8: send UTF-8 without NULs, percent-encoded")
		}
		if !goodText(v) {
			return rackplane.Errorf(rackplane.EINVALID, "query parameter %q holds a NUL or bytes that are not UTF-8: send UTF-8 without NULs, percent-encoded", clip(k))
		}
	}
	return nil
}

func goodText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// ErrorBody is the JSON of an error answer, the same shape the region's
// API answers with.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteError answers with status and err's code and client-safe message
// as JSON.
func WriteError(w http.ResponseWriter, status int, err error) {
	var body ErrorBody
	body.Error.Code = rackplane.ErrorCode(err)
	body.Error.Message = rackplane.ErrorMessage(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
