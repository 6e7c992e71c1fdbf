package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

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
	flagenv.Usage(fs, "usage: rackd [flags]")
	if err := flagenv.Parse(fs, args, nil); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	level, _ := logging.ParseLevel(cfg.LogLevel)
	log := logging.New(level)
	nc, err := dial.NATS(cfg.NATSURL, "rackd "+cfg.Name, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := rack.New(cfg, nc, log)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
