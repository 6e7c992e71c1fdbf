package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Profiles is a binary's admin listener of Go profiles (net/http/pprof
// at /debug/pprof/), off unless -pprof-addr gives it an address. It has
// no authentication and shows the process's code paths, goroutine stacks
// and memory, so it takes a loopback address (an operator reaches it
// over ssh) unless -pprof-allow-remote says otherwise.
type Profiles struct {
	Addr        string
	AllowRemote bool
}

// RegisterFlags binds p's fields to flags of fs.
func (p *Profiles) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&p.Addr, "pprof-addr", p.Addr, "address of an admin listener serving Go profiles at /debug/pprof/ (such as 127.0.0.1:6060); empty turns it off. Loopback only, unless -pprof-allow-remote")
	fs.BoolVar(&p.AllowRemote, "pprof-allow-remote", p.AllowRemote, "let -pprof-addr be an address other machines reach: the profiles have no authentication and show the process's stacks and memory")
}

// Validate refuses an address that is not host:port, and one that is not
// loopback unless AllowRemote.
func (p Profiles) Validate() error {
	if p.Addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(p.Addr)
	if err != nil {
		return fmt.Errorf("-pprof-addr %q: want host:port, such as 127.0.0.1:6060", p.Addr)
	}
	if !p.AllowRemote && !loopback(host) {
		return fmt.Errorf("-pprof-addr %q is not a loopback address: profiles have no authentication and show the process's stacks and memory; "+
			"give 127.0.0.1:<port> or [::1]:<port> (and reach it over ssh), or add -pprof-allow-remote to serve them to the network", p.Addr)
	}
	return nil
}

// loopback says whether host names this machine alone. An empty host
// (":6060") is every address, and any other name may resolve elsewhere.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ProfilesHandler serves net/http/pprof's handlers on a mux of its own:
// never http.DefaultServeMux, where importing net/http/pprof also puts
// them, so no server of the default mux could ever serve them.
func ProfilesHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Start listens on p.Addr and serves the profiles until ctx ends or stop
// is called, which waits for the server to close. With no address it
// does nothing, and addr is "". The address is taken at once, so that a
// port in use stops the start (ExplainListen names -pprof-addr).
func (p Profiles) Start(ctx context.Context, log *slog.Logger) (addr string, stop func(), err error) {
	if p.Addr == "" {
		return "", func() {}, nil
	}
	if err := p.Validate(); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		return "", nil, fmt.Errorf("pprof listener: %w", err)
	}
	srv := &http.Server{
		Handler:           ProfilesHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: a CPU profile or a trace takes as long as it
		// was asked for (?seconds=).
		IdleTimeout: time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		// Profiles in progress (a 30 s CPU profile) are cut short.
		_ = srv.Close()
	}()
	addr = ln.Addr().String()
	log.Info("serving Go profiles", "pprof_addr", addr, "path", "/debug/pprof/")
	return addr, func() { cancel(); <-done }, nil
}
