package httpserver

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config bounds one HTTP server. DefaultConfig gives the defaults of every
// server, region and rack alike.
type Config struct {
	// ReadHeaderTimeout bounds the wait for a request's headers, from the
	// connection's first byte or the end of the previous request.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the whole request, headers and body. No endpoint
	// takes an upload larger than MaxBodyBytes, so it is short.
	ReadTimeout time.Duration
	// WriteTimeout is the longest one piece of a response (at most
	// writeChunk bytes) may wait on the client: a client that stops
	// reading is cut off after it, a download that keeps moving never is.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle that long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (and request line).
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request's body; handlers may take less.
	MaxBodyBytes int64
	// MaxConns bounds the connections open at once; past it, the
	// connection idle longest is closed for the new one.
	MaxConns int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		MaxBodyBytes:      1 << 20,
		MaxConns:          4096,
	}
}

// RegisterFlags binds c's fields to flags of fs, each name starting with
// prefix ("http-" gives -http-read-timeout and so on).
func (c *Config) RegisterFlags(fs *flag.FlagSet, prefix, server string) {
	fs.DurationVar(&c.ReadHeaderTimeout, prefix+"read-header-timeout", c.ReadHeaderTimeout, "how long "+server+" waits for a request's headers")
	fs.DurationVar(&c.ReadTimeout, prefix+"read-timeout", c.ReadTimeout, "how long "+server+" waits for a whole request, headers and body")
	fs.DurationVar(&c.WriteTimeout, prefix+"write-timeout", c.WriteTimeout, "how long "+server+" waits on a client that does not read its response (per 128 KiB written: a download that keeps moving is never cut off)")
	fs.DurationVar(&c.IdleTimeout, prefix+"idle-timeout", c.IdleTimeout, "how long "+server+" keeps an idle keep-alive connection")
	fs.IntVar(&c.MaxHeaderBytes, prefix+"max-header-bytes", c.MaxHeaderBytes, "largest request headers "+server+" reads")
	fs.Int64Var(&c.MaxBodyBytes, prefix+"max-body-bytes", c.MaxBodyBytes, "largest request body "+server+" reads")
	fs.IntVar(&c.MaxConns, prefix+"max-conns", c.MaxConns, "most connections "+server+" keeps open; past it the one idle longest is closed for the new one")
}

// Validate reports every bad setting at once, by the flag names
// RegisterFlags gives with prefix. It changes nothing.
func (c Config) Validate(prefix string) error {
	var errs []error
	between := func(name string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			errs = append(errs, fmt.Errorf("-%s%s %s: want %s to %s", prefix, name, d, lo, hi))
		}
	}
	between("read-header-timeout", c.ReadHeaderTimeout, 100*time.Millisecond, 5*time.Minute)
	between("read-timeout", c.ReadTimeout, 100*time.Millisecond, time.Hour)
	between("write-timeout", c.WriteTimeout, 100*time.Millisecond, time.Hour)
	between("idle-timeout", c.IdleTimeout, 100*time.Millisecond, time.Hour)
	if c.ReadTimeout > 0 && c.ReadTimeout < c.ReadHeaderTimeout {
		errs = append(errs, fmt.Errorf("-%sread-timeout %s: want at least -%sread-header-timeout (%s), since it covers the headers too",
			prefix, c.ReadTimeout, prefix, c.ReadHeaderTimeout))
	}
	if c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > 16<<20 {
		errs = append(errs, fmt.Errorf("-%smax-header-bytes %d: want 4096 to 16777216", prefix, c.MaxHeaderBytes))
	}
	if c.MaxBodyBytes < 1<<10 || c.MaxBodyBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("-%smax-body-bytes %d: want 1024 to 1073741824", prefix, c.MaxBodyBytes))
	}
	if c.MaxConns < 16 || c.MaxConns > 1<<20 {
		errs = append(errs, fmt.Errorf("-%smax-conns %d: want 16 to 1048576", prefix, c.MaxConns))
	}
	return errors.Join(errs...)
}
