package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/flagenv"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/rack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rackd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := rack.DefaultConfig()
	fs := flag.NewFlagSet("rackd", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	var printID bool
	fs.BoolVar(&printID, "print-id", false, "print the rack id (creating it in -data-dir on first use) and exit: NATS permissions for the rack name it")
	flagenv.Usage(fs, "usage: rackd [flags]")
	if err := flagenv.Parse(fs, args, nil); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	level, _ := logging.ParseLevel(cfg.LogLevel)
	log := logging.New(level)
	// The id comes first: the connection's inbox carries it, so NATS
	// permissions can confine the rack to its own replies.
	id, err := rack.LoadOrCreateID(cfg.DataDir)
	if err != nil {
		return err
	}
	if printID {
		fmt.Println(id)
		return nil
	}
	nc, err := dial.NATS(dial.NATSConfig{URL: cfg.NATSURL, Name: "rackd " + cfg.Name, NKeySeedFile: cfg.NATSNKeyFile,
		CAFile: cfg.NATSCAFile, CertFile: cfg.NATSCertFile, KeyFile: cfg.NATSKeyFile, InboxPrefix: events.RackInboxPrefix(id)}, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := rack.New(ctx, cfg, nc, log)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
