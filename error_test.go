package rackplane

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorCodeAndMessage(t *testing.T) {
	inner := errors.New("pq: connection refused on 10.1.2.3")
	tests := []struct {
		name    string
		err     error
		code    string
		message string
	}{
		{"nil", nil, "", ""},
		{"classified", Errorf(ENOTFOUND, "no rack %s", "r1"), ENOTFOUND, "no rack r1"},
		{"wrapped with context", fmt.Errorf("get rack: %w", Errorf(ECONFLICT, "taken")), ECONFLICT, "taken"},
		{"internal cause stays internal", WrapError(EUNAVAILABLE, inner, "database unavailable"), EUNAVAILABLE, "database unavailable"},
		{"unclassified is internal and says nothing", inner, EINTERNAL, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(tt.err); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
			if got := ErrorMessage(tt.err); got != tt.message {
				t.Errorf("message %q, want %q", got, tt.message)
			}
		})
	}
	if w := WrapError(EUNAVAILABLE, inner, "x"); !errors.Is(w, inner) {
		t.Error("the cause is not reachable with errors.Is")
	}
}
