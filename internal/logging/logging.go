package logging

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Config is how a binary logs.
type Config struct {
	Level string // debug, info, warn or error
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Level: "info"} }

// RegisterFlags binds c's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Level, "log-level", c.Level, "debug, info, warn or error")
}

// Validate reports a level that is not one of the four.
func (c Config) Validate() error {
	_, err := ParseLevel(c.Level)
	return err
}

// Logger returns a text logger on stderr at c's level; c should have
// passed Validate (a bad level logs at info).
func (c Config) Logger() *slog.Logger {
	level, _ := ParseLevel(c.Level)
	return New(level)
}

// ParseLevel parses debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("-log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// New returns a text logger on stderr at level.
func New(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
