package region_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
)

// ingestRacksEnv, in the environment of this test binary started again
// by BenchmarkIngestVsCopy, holds the racks' ids (comma separated): the
// process then runs the NATS server and the racks' publishers
// (ingestRacksChild) rather than the tests.
const (
	ingestRacksEnv       = "RACKPLANE_BENCH_INGEST_RACKS"
	ingestRacksBufferEnv = "RACKPLANE_BENCH_INGEST_BUFFER"
	ingestRacksDirEnv    = "RACKPLANE_BENCH_INGEST_DIR"
	// ingestRacksProfileEnv, set by whoever runs the benchmark, names a
	// file for the CPU profile of the racks' process (NATS and the
	// publishers), as -cpuprofile gives the region's.
	ingestRacksProfileEnv = "RACKPLANE_BENCH_RACKS_CPUPROFILE"
)

// ingestRacks is the process of the NATS server and the racks'
// publishers, driven by one command a line on its stdin, each answered by
// a line on its stdout:
//
//	load FILE      read events (JSON, one after the other) → loaded
//	go             publish them, each by its rack's publisher → published
//	steady R N     publish N new events at R a second, round-robin over the
//	               racks, "p ID UNIXNANO" for each as it is published → steady-done
//
// It ends when its stdin closes.
type ingestRacks struct {
	b       *testing.B
	natsURL string
	child   *benchChild
	stdin   io.WriteCloser
	dir     string
	pid     int
}

type pubAt struct {
	id string
	at time.Time
}

func atoiEnv(b *testing.B, name, v string) int {
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

// startIngestRacks starts the process for racks, each publisher holding up
// to buffer events, and returns once its NATS server is up.
func startIngestRacks(b *testing.B, racks []string, buffer int) *ingestRacks {
	b.Helper()
	dir := b.TempDir()
	p := &ingestRacks{b: b, dir: dir}
	p.child = startBenchChild(b, "racks'", filepath.Join(dir, "racks.log"), ingestRacksEnv+"="+strings.Join(racks, ","),
		ingestRacksBufferEnv+"="+strconv.Itoa(buffer), ingestRacksDirEnv+"="+filepath.Join(dir, "nats"))
	p.stdin, p.pid = p.child.stdin, p.child.proc.Pid
	p.natsURL = p.await("ingest-racks-ready ")
	return p
}

// await returns the rest of the next line that starts with prefix,
// failing the benchmark if the process ends or says nothing for 2m.
func (p *ingestRacks) await(prefix string) string {
	p.b.Helper()
	return p.child.await(prefix, 2*time.Minute)
}

// do sends cmd and waits for answer.
func (p *ingestRacks) do(cmd, answer string) {
	p.b.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		p.b.Fatal(err)
	}
	p.await(answer)
}

// load hands evs to the process, to publish at the next "go".
func (p *ingestRacks) load(evs []events.Event) {
	p.b.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, e := range evs {
		if err := enc.Encode(e); err != nil {
			p.b.Fatal(err)
		}
	}
	file := filepath.Join(p.dir, "events.json")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		p.b.Fatal(err)
	}
	p.do("load "+file, "loaded")
}

// steady has the racks publish total events at rate a second, and returns
// each event's id and the time of its publish as the process says it.
func (p *ingestRacks) steady(rate, total int) <-chan pubAt {
	p.b.Helper()
	if _, err := fmt.Fprintf(p.stdin, "steady %d %d\n", rate, total); err != nil {
		p.b.Fatal(err)
	}
	pubc := make(chan pubAt, total)
	go func() {
		for l := range p.child.lines {
			if l == "steady-done" {
				return
			}
			f := strings.Fields(l)
			if len(f) != 3 || f[0] != "p" {
				continue
			}
			ns, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				continue
			}
			pubc <- pubAt{f[1], time.Unix(0, ns)}
		}
	}()
	return pubc
}

// cpu returns the CPU time used so far by this process (the region) and
// by the racks' process.
func (p *ingestRacks) cpu() (region, racks time.Duration) {
	p.b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		p.b.Fatal(err)
	}
	t, err := procTicks(p.pid)
	if err != nil {
		p.b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), time.Duration(t) * time.Second / clockTicks
}

// ingestRacksChild is the racks' process of BenchmarkIngestVsCopy
// (ingestRacks).
func ingestRacksChild(racks string) int {
	fatal := func(v ...any) int {
		fmt.Fprintln(os.Stderr, v...)
		return 1
	}
	buffer, _ := strconv.Atoi(os.Getenv(ingestRacksBufferEnv))
	if path := os.Getenv(ingestRacksProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	ns, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: os.Getenv(ingestRacksDirEnv), Name: "ingest-bench"})
	if err != nil {
		return fatal(err)
	}
	defer ns.WaitForShutdown()
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		return fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ids := strings.Split(racks, ",")
	pubs := map[string]*eventbus.Publisher{}
	for _, id := range ids {
		p := eventbus.NewPublisher(js, eventbus.PublisherConfig{Source: events.RackSource(id), Subject: events.RackStreamName(id), Buffer: buffer})
		go p.Run(ctx)
		pubs[events.RackSource(id)] = p
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, v ...any) {
		fmt.Fprintf(out, format+"\n", v...)
		_ = out.Flush()
	}
	say("ingest-racks-ready %s", ns.ClientURL())
	var loaded []events.Event
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "load":
			data, err := os.ReadFile(arg)
			if err != nil {
				return fatal(err)
			}
			loaded = loaded[:0]
			for dec := json.NewDecoder(bytes.NewReader(data)); dec.More(); {
				var e events.Event
				if err := dec.Decode(&e); err != nil {
					return fatal(err)
				}
				loaded = append(loaded, e)
			}
			say("loaded")
		case "go":
			for _, e := range loaded {
				pubs[e.Source].Publish(e)
			}
			say("published")
		case "steady":
			var rate, total int
			if _, err := fmt.Sscan(arg, &rate, &total); err != nil || rate < 1 {
				return fatal("steady:", arg, err)
			}
			interval := time.Second / time.Duration(rate)
			start := time.Now()
			for i := range total {
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				id := ids[i%len(ids)]
				now := time.Now()
				e, err := events.New(events.RackSource(id), events.TypeEventsDropped, events.RackStreamName(id), now,
					events.EventsDropped{Count: 1, Since: now.UTC()})
				if err != nil {
					return fatal(err)
				}
				pubs[e.Source].Publish(e)
				say("p %s %d", e.ID, now.UnixNano())
			}
			say("steady-done")
		default:
			return fatal("unknown command", cmd)
		}
	}
	return 0
}
