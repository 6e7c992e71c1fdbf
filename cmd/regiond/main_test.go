package main

import (
	"context"
	"strings"
	"testing"
)

// TestEveryBadSettingAtOnce: regiond names every flag it cannot parse and
// every invalid setting in one message, and starts nothing.
func TestEveryBadSettingAtOnce(t *testing.T) {
	t.Setenv("RACKPLANE_INGEST_BATCH", "lots")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"flags and settings", []string{"-heartbeat-misses", "x", "-deploy-timeout", "soon", "-bogus", "-http-adr", "1", "-nats-url", "", "-http-addr", "no-port"},
			[]string{"configuration:", `-heartbeat-misses "x": want a whole number`, `-deploy-timeout "soon": want a duration`,
				"-bogus: no such flag", "-http-adr: no such flag; did you mean -http-addr?", `RACKPLANE_INGEST_BATCH="lots" (for -ingest-batch): want a whole number`,
				"-nats-url is empty", `-http-addr "no-port": want host:port`, "-nats-issuer-seed is empty", "-nats-system-nkey is empty"}},
		{"a tool's flags", []string{"-database-url", "postgres://db:port/x", "-log-level", "loud", "-ingest-batch", "1", "token", "create", "a", "b"},
			[]string{"-database-url (or DATABASE_URL)", `-log-level "loud"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args)
			if err == nil {
				t.Fatal("started")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q missing from:\n%v", w, err)
				}
			}
			if n := strings.Count(err.Error(), "\n"); n != len(tt.want)-1 && tt.want[0] == "configuration:" {
				t.Errorf("%d problems, want %d:\n%v", n, len(tt.want)-1, err)
			}
		})
	}
}
