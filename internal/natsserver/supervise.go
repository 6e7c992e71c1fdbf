package natsserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rackplane/rackplane/internal/backoff"
)

// Supervised is an embedded server that is started again when JetStream's
// store fails for good.
//
// nats-server keeps the first error a stream's file store meets while
// writing as a "critical write error" and fails every later write to that
// stream with it, until the server restarts. Running out of file
// descriptors is enough: the periodic sync opens the stream's index.db,
// gets EMFILE, and from then on the stream takes no message, long after
// descriptors are free again. A separate nats-server has an operator (or
// its supervisor) to restart it; the embedded one of `rackplane dev` has
// this.
type Supervised struct {
	cfg      Config
	log      *slog.Logger
	critical chan string

	mu       sync.Mutex
	s        *server.Server
	restarts int
	// stopped is set by Shutdown: a restart in progress then starts no
	// server, or stops the one it just started, which Shutdown missed.
	stopped bool
	stop    chan struct{} // closed by Shutdown: Run returns
}

// StartSupervised starts a server whose log goes to log (warnings and
// errors; notices at debug level). Run watches it.
func StartSupervised(cfg Config, log *slog.Logger) (*Supervised, error) {
	sv := &Supervised{cfg: cfg, log: log, critical: make(chan string, 1), stop: make(chan struct{})}
	s, err := sv.start()
	if err != nil {
		return nil, err
	}
	sv.s = s
	// Pin the port so a restart comes back where clients reconnect.
	sv.cfg.Port = s.Addr().(*net.TCPAddr).Port
	return sv, nil
}

func (sv *Supervised) start() (*server.Server, error) {
	return start(sv.cfg, &serverLog{log: sv.log, critical: sv.critical, last: map[string]time.Time{}})
}

// Server is the server running now (Run may replace it).
func (sv *Supervised) Server() *server.Server {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.s
}

// Restarts is how many times Run started the server again.
func (sv *Supervised) Restarts() int {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.restarts
}

// Run starts the server again, on the same address and store, each time
// its JetStream store reports a critical write error, once the store's
// directory can be written to again; clients reconnect on their own. It
// returns when ctx ends, leaving the server running (Shutdown stops it),
// or after Shutdown.
func (sv *Supervised) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// A restart waiting for the store gives up at Shutdown.
		select {
		case <-sv.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		var why string
		select {
		case <-ctx.Done():
			return nil
		case why = <-sv.critical:
		}
		sv.log.Error("embedded NATS: a JetStream store failed and takes no more messages; restarting the server", "err", why)
		if err := sv.restart(ctx); err != nil {
			return err
		}
	}
}

func (sv *Supervised) restart(ctx context.Context) error {
	// Until files can be opened in the store again, a restarted server
	// would fail the same way.
	err := backoff.Retry(ctx, backoff.Policy{Max: 5 * time.Second}, func(context.Context) error {
		f, err := os.CreateTemp(sv.cfg.StoreDir, ".probe-*")
		if err != nil {
			return err
		}
		f.Close()
		return os.Remove(f.Name())
	}, func(err error, wait time.Duration) {
		sv.log.Warn("embedded NATS: store still not writable", "err", err, "retry_in", wait)
	})
	if err != nil {
		return nil // ctx ended
	}
	sv.mu.Lock()
	old := sv.s
	sv.mu.Unlock()
	old.Shutdown()
	old.WaitForShutdown()
	// Errors the old server logged while stopping are about the old store.
	select {
	case <-sv.critical:
	default:
	}
	started := false
	err = backoff.Retry(ctx, backoff.Policy{Max: 5 * time.Second}, func(context.Context) error {
		s, err := sv.start()
		if err != nil {
			return err
		}
		sv.mu.Lock()
		if sv.stopped {
			// Shutdown came while this one started: it stopped the old one.
			sv.mu.Unlock()
			s.Shutdown()
			s.WaitForShutdown()
			return nil
		}
		sv.s, started = s, true
		sv.restarts++
		sv.mu.Unlock()
		return nil
	}, func(err error, wait time.Duration) {
		sv.log.Error("embedded NATS: start again", "err", err, "retry_in", wait)
	})
	if err != nil || !started {
		return nil // ctx ended, or Shutdown
	}
	sv.log.Info("embedded NATS: started again", "url", sv.Server().ClientURL())
	return nil
}

// Shutdown stops the server, and a restart in progress; Run returns.
func (sv *Supervised) Shutdown() {
	sv.mu.Lock()
	if !sv.stopped {
		sv.stopped = true
		close(sv.stop)
	}
	s := sv.s
	sv.mu.Unlock()
	s.Shutdown()
	s.WaitForShutdown()
}

// serverLog is nats-server's log through slog, and the watch for critical
// write errors. A failing store logs an error for every message refused,
// so each distinct message is logged at most once a minute.
type serverLog struct {
	log      *slog.Logger
	critical chan<- string

	mu   sync.Mutex
	last map[string]time.Time
}

func (l *serverLog) emit(level slog.Level, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	if level >= slog.LevelError && strings.Contains(strings.ToLower(msg), "critical write error") {
		select {
		case l.critical <- msg:
		default:
		}
	}
	if level >= slog.LevelWarn {
		l.mu.Lock()
		now := time.Now()
		if t, ok := l.last[format]; ok && now.Sub(t) < time.Minute {
			l.mu.Unlock()
			return
		}
		l.last[format] = now
		l.mu.Unlock()
	}
	l.log.Log(context.Background(), level, "nats-server: "+msg)
}

func (l *serverLog) Noticef(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }
func (l *serverLog) Warnf(format string, v ...any)   { l.emit(slog.LevelWarn, format, v) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.emit(slog.LevelError, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.emit(slog.LevelError, format, v) }
func (l *serverLog) Debugf(format string, v ...any)  {}
func (l *serverLog) Tracef(format string, v ...any)  {}
