package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/flagenv"
	"github.com/rackplane/rackplane/region/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "regiond:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := regiond.DefaultConfig()
	fs := flag.NewFlagSet("regiond", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	flagenv.Usage(fs, "usage: regiond [flags]\n       regiond [flags] projections rebuild\n       regiond [flags] token create NAME ACTOR   (prints a new API token)")
	if err := flagenv.Parse(fs, args, nil); err != nil {
		return err
	}
	tool := len(fs.Args()) > 0
	validate := cfg.Validate
	if tool {
		// The tools reach PostgreSQL alone.
		validate = cfg.ValidateTools
	}
	if err := validate(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := cfg.Log.Logger()

	pool, err := dial.Postgres(ctx, cfg.Postgres.ConnString())
	if err != nil {
		return err
	}
	defer pool.Close()

	if rest := fs.Args(); tool {
		if len(rest) == 4 && rest[0] == "token" && rest[1] == "create" {
			db := postgres.New(pool, log)
			if err := db.Migrate(ctx); err != nil {
				return err
			}
			_, plain, err := db.CreateToken(ctx, rest[2], rest[3], "regiond-cli", time.Now())
			if err != nil {
				return err
			}
			fmt.Println(plain)
			return nil
		}
		if len(rest) == 2 && rest[0] == "projections" && rest[1] == "rebuild" {
			db := postgres.New(pool, log)
			if err := db.Migrate(ctx); err != nil {
				return err
			}
			n, err := db.RebuildProjections(ctx)
			if err != nil {
				return err
			}
			fmt.Printf("rebuilt projections from %d events\n", n)
			return nil
		}
		return fmt.Errorf("unknown command %q (want: projections rebuild, or token create NAME ACTOR)", rest)
	}

	r, err := regiond.New(cfg.Region, cfg.NATS, cfg.NATSAuth, pool, log)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(ctx)
}
