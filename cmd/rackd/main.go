package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/flagenv"
	"github.com/rackplane/rackplane/rack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rackd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := rackd.DefaultConfig()
	fs := flag.NewFlagSet("rackd", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	var printID bool
	fs.BoolVar(&printID, "print-id", false, "print the rack id (creating it in -data-dir on first use) and exit: the rack connects to NATS under it")
	flagenv.Usage(fs, "usage: rackd [flags]")
	// A flag that does not parse and a setting that is invalid are
	// reported together, every one of them, before anything starts.
	parseErr := flagenv.Parse(fs, args, nil)
	if errors.Is(parseErr, flag.ErrHelp) {
		return parseErr
	}
	if err := errors.Join(parseErr, cfg.Validate()); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if printID {
		id, err := rack.LoadOrCreateID(cfg.Rack.DataDir)
		if err != nil {
			return err
		}
		fmt.Println(id)
		return nil
	}
	listeners := []daemon.Listener{{Flag: "http-addr", Addr: cfg.Rack.HTTPAddr}, {Flag: "pprof-addr", Addr: cfg.Profiles.Addr}}
	for _, a := range cfg.Rack.TFTPAddrs {
		listeners = append(listeners, daemon.Listener{Flag: "tftp-addr", Addr: a})
	}
	log := cfg.Log.Logger()
	_, stopProfiles, err := cfg.Profiles.Start(ctx, log)
	if err != nil {
		return daemon.ExplainListen(err, listeners...)
	}
	defer stopProfiles()
	r, err := rackd.New(ctx, cfg.Rack, cfg.NATS, cfg.NATSAuth, log)
	if err != nil {
		return daemon.ExplainListen(err, listeners...)
	}
	defer r.Close()
	return daemon.ExplainListen(r.Run(ctx), listeners...)
}
