// Package logging builds the binaries' slog loggers from a level name.
package logging
