// Package logging builds the binaries' slog loggers from a level name: the
// -log-level setting every binary shares, with its flag and its check.
package logging
