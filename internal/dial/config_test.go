package dial

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want []string // nothing: valid
	}{
		{"NATS defaults", DefaultNATSConfig().Validate(), nil},
		{"NATS with both TLS files", NATSConfig{URL: "tls://n:4222", CertFile: "c", KeyFile: "k"}.Validate(), nil},
		{"NATS without a URL and with a key alone", NATSConfig{KeyFile: "k"}.Validate(),
			[]string{"-nats-url is empty", "-nats-cert and -nats-key go together"}},
		{"PostgreSQL URL", PostgresConfig{URL: "postgres://u@db:5432/x"}.Validate(), nil},
		{"PostgreSQL key=value", PostgresConfig{URL: "host=db dbname=x"}.Validate(), nil},
		{"PostgreSQL URL with a bad port, password hidden", PostgresConfig{URL: "postgres://u:secret@db:port/x"}.Validate(),
			[]string{"-database-url", "invalid port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == nil {
				if tt.err != nil {
					t.Fatalf("refused: %v", tt.err)
				}
				return
			}
			if tt.err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(tt.err.Error(), w) {
					t.Errorf("%q missing from %q", w, tt.err)
				}
			}
			if strings.Contains(tt.err.Error(), "secret") {
				t.Errorf("the message shows the password: %q", tt.err)
			}
		})
	}
}

func TestConnString(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://from-env/x")
	if got := (PostgresConfig{}).ConnString(); got != "postgres://from-env/x" {
		t.Errorf("empty URL: %q, want $DATABASE_URL", got)
	}
	if got := (PostgresConfig{URL: "postgres://flag/x"}).ConnString(); got != "postgres://flag/x" {
		t.Errorf("URL given: %q, want it", got)
	}
}

// TestURLHasCredentials: credentials in any URL of a list count, since
// nats.go then sends them instead of an nkey.
func TestURLHasCredentials(t *testing.T) {
	for _, tt := range []struct {
		urls string
		want bool
	}{
		{"nats://127.0.0.1:4222", false},
		{"tls://n1:4222,tls://n2:4222", false},
		{"nats://user:pw@n:4222", true},
		{"nats://token@n:4222", true},
		{"nats://n1:4222, nats://u:p@n2:4222", true},
	} {
		if got := URLHasCredentials(tt.urls); got != tt.want {
			t.Errorf("URLHasCredentials(%q) = %v, want %v", tt.urls, got, tt.want)
		}
	}
}
