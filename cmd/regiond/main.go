package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/flagenv"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/secrets"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "regiond:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := regiond.DefaultConfig()
	fs := flag.NewFlagSet("regiond", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	flagenv.Usage(fs, "usage: regiond [flags]\n       regiond [flags] projections rebuild\n       regiond [flags] token create NAME ACTOR   (prints a new API token)\n"+
		"       regiond secrets generate FILE             (writes a new secrets key, mode 0600, unless FILE exists; prints its id)\n"+
		"       regiond [flags] secrets reseal            (seals every stored secret with -secrets-key-file, opening with it and -secrets-old-key-files)")
	// A flag that does not parse and a setting that is invalid are
	// reported together, every one of them, before anything starts.
	parseErr := flagenv.Parse(fs, args, nil)
	if errors.Is(parseErr, flag.ErrHelp) {
		return parseErr
	}
	tool := len(fs.Args()) > 0
	validate := cfg.Validate
	if tool {
		// The tools reach PostgreSQL alone.
		validate = cfg.ValidateTools
	}
	if err := errors.Join(parseErr, validate()); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := cfg.Log.Logger()
	if rest := fs.Args(); len(rest) == 3 && rest[0] == "secrets" && rest[1] == "generate" {
		return generateKey(rest[2], log)
	}

	listeners := []daemon.Listener{{Flag: "http-addr", Addr: cfg.Region.HTTPAddr}, {Flag: "pprof-addr", Addr: cfg.Profiles.Addr}}
	if !tool {
		// From the start: a slow start (migrations) can be profiled too.
		_, stopProfiles, err := cfg.Profiles.Start(ctx, log)
		if err != nil {
			return daemon.ExplainListen(err, listeners...)
		}
		defer stopProfiles()
	}

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
		if len(rest) == 2 && rest[0] == "secrets" && rest[1] == "reseal" {
			return reseal(ctx, postgres.New(pool, log), cfg.Region.Secrets, log)
		}
		return fmt.Errorf("unknown command %q (want: projections rebuild, token create NAME ACTOR, secrets generate FILE or secrets reseal)", rest)
	}

	r, err := regiond.New(cfg.Region, cfg.NATS, cfg.NATSAuth, pool, log)
	if err != nil {
		return daemon.ExplainListen(err, listeners...)
	}
	defer r.Close()
	return r.Run(ctx)
}

// generateKey writes a new secrets key to path unless there is a file
// there, and prints the id of the key in it.
func generateKey(path string, log *slog.Logger) error {
	k, made, err := secrets.EnsureKeyFile(path, log)
	if err != nil {
		return err
	}
	if made {
		fmt.Printf("wrote a new secrets key to %s (id %s)\n", path, k.ID())
	} else {
		fmt.Printf("%s already holds a key (id %s); left as it is\n", path, k.ID())
	}
	return nil
}

// reseal seals every stored secret with the current key: after a
// rotation, once it reports nothing unreadable, the old key can go.
func reseal(ctx context.Context, db *postgres.DB, cfg secrets.Config, log *slog.Logger) error {
	keys, err := cfg.Load(log)
	if err != nil {
		return err
	}
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	rep, err := db.ResealSecrets(ctx, keys, time.Now())
	if err != nil {
		return err
	}
	fmt.Printf("key %s: %d secrets were under it already, %d re-sealed from an old key, %d sealed from clear\n",
		keys.CurrentID(), rep.Current, rep.Resealed, rep.Sealed)
	if rep.Unreadable > 0 {
		return fmt.Errorf("%d secrets are under keys %v, which were not given (-secrets-old-key-files): they stay as they are", rep.Unreadable, rep.UnreadableKeys)
	}
	return nil
}
