package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestRackEventsSurviveAnOutageAndAStop: with NATS away, a rack serves
// 10,000 HTTP boot requests (each one a boot.handoff event, its
// -boot-events-* limits raised for it) and is stopped,
// with SIGTERM or with SIGKILL. NATS comes back, rackd and regiond start:
// all 10,000 events are in the stream exactly once, and in the region's
// event log.
func TestRackEventsSurviveAnOutageAndAStop(t *testing.T) {
	endToEnd(t)
	tests := []struct {
		name string
		stop func(t *testing.T, p *proc)
	}{
		{"SIGTERM", func(t *testing.T, p *proc) {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Fatal("rackd did not stop within 30s of SIGTERM")
			}
			if p.err != nil {
				t.Fatalf("rackd stopped with %v", p.err)
			}
			// It says what it leaves behind.
			if !strings.Contains(p.Output(), "events not yet published stay in the journal") {
				t.Fatalf("rackd stopped with events journalled and did not say so:\n%s", tail(p.Output(), 20))
			}
		}},
		{"SIGKILL", func(t *testing.T, p *proc) { p.Kill() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ns := natsserver.StartTest(t)
			js, err := jetstream.New(ns.Connect())
			if err != nil {
				t.Fatal(err)
			}
			if err := eventbus.EnsureStreams(ctx, js, time.Hour); err != nil {
				t.Fatal(err)
			}
			httpAddr := freeAddr(t)
			rackArgs := []string{"-insecure-nats", "-nats-url", ns.URL, "-data-dir", filepath.Join(t.TempDir(), "rack"), "-name", "journal-rack",
				"-http-addr", httpAddr, "-tftp-addr", "", "-import-system-bootloaders=false", "-event-flush-timeout", "2s"}
			// Every request reported one by one, whatever its rate: the
			// journal is what is tested.
			rackArgs = append(rackArgs, everyBootEvent...)
			rack := start(t, "rackd", rackArgs...)
			base := "http://" + httpAddr
			eventually(t, 15*time.Second, "rackd serving", func() error {
				_, err := metrics(base)
				return err
			})

			ns.Stop()
			const n = 10000
			for i := 0; i < n; i++ {
				resp, err := http.Get(fmt.Sprintf("%s/journal-test/%05d", base, i))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("GET a missing boot file: %s, want 404", resp.Status)
				}
			}
			// Every event is in the journal, on disk, before the stop.
			eventually(t, 15*time.Second, "events journalled", func() error {
				m, err := metrics(base)
				if err != nil {
					return err
				}
				if m["rackplane_events_awaiting_journal"] != 0 || m["rackplane_journal_records_pending"] < n {
					return fmt.Errorf("%v awaiting the journal, %v in it", m["rackplane_events_awaiting_journal"], m["rackplane_journal_records_pending"])
				}
				return nil
			})
			tt.stop(t, rack)

			ns.Restart()
			dbURL := pgtest.NewDatabase(t)
			start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", freeAddr(t))
			start(t, "rackd", rackArgs...)

			eventually(t, 60*time.Second, "every event in the stream", func() error {
				got, err := handoffsInStream(ctx, js)
				if err != nil {
					return err
				}
				for i := 0; i < n; i++ {
					name := fmt.Sprintf("/journal-test/%05d", i)
					if got[name] != 1 {
						return fmt.Errorf("%s is in the stream %d times, want once (%d names in all)", name, got[name], len(got))
					}
				}
				return nil
			})
			pool, err := pgxpool.New(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			eventually(t, 60*time.Second, "every event in the region's log", func() error {
				var total, names int
				err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT data->>'file_name') FROM events
					WHERE type = $1 AND data->>'file_name' LIKE '/journal-test/%'`, events.TypeBootHandoff).Scan(&total, &names)
				if err != nil {
					return err
				}
				if total != n || names != n {
					return fmt.Errorf("%d events for %d file names in the log, want %d", total, names, n)
				}
				return nil
			})
		})
	}
}

// metrics scrapes the unlabelled samples of a /metrics page.
func metrics(base string) (map[string]float64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// handoffsInStream counts the boot.handoff events of the rack stream by
// file name.
func handoffsInStream(ctx context.Context, js jetstream.JetStream) (map[string]int, error) {
	cons, err := js.OrderedConsumer(ctx, events.RackStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	got := map[string]int{}
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return nil, err
		}
		k := 0
		for m := range batch.Messages() {
			k++
			e, err := v.Decode(m.Data())
			if err != nil {
				return nil, fmt.Errorf("event in the stream does not validate: %w", err)
			}
			if e.Type != events.TypeBootHandoff {
				continue
			}
			var h events.BootHandoff
			if err := e.DecodeData(&h); err != nil {
				return nil, err
			}
			got[h.FileName]++
		}
		if k == 0 {
			return got, nil
		}
	}
}

// everyBootEvent are rackd's flags that report every boot request as an
// event of its own, whatever its rate and source: for tests that count
// events made by many requests from one address (the defaults sum those
// up past 100 from a source, as they should for junk).
var everyBootEvent = []string{"-boot-events-rate", "1000000", "-boot-events-burst", "1000000",
	"-boot-events-per-source-rate", "1000000", "-boot-events-per-source-burst", "1000000"}
