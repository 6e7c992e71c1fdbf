package tftp_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/tftp/tftptest"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/tftp"
)

// BenchmarkTFTPVsPeers is the one-command comparison of rackd's TFTP
// server with atftpd and tftpd-hpa, each started here as its own
// process over the same files, each in its default configuration.
//
// At 0% loss: 20 concurrent transfers of 8 MiB straight to the server by
// curl (blksize 1468, lock-step, as boot firmware), cleanPasses times a
// round, MB/s over the wall time, and each server process's CPU per MB:
// client and servers share the machine's two cores, so the MB/s also
// turns on what the client costs (a Go client cost more than the servers
// did, and brought all three within 20% of one another).
//
// At 1% loss: lossyTransfers transfers of 512 KiB, each through tftptest's lossy relay with a seed of its own, the
// client asking for windowsize 8 and timeout 1 (atftpd and rackd grant
// the windowsize, tftpd-hpa goes lock-step), lossyAtOnce of them at a
// time; MB/s is their bytes over the sum of their durations, what one
// client sees. A lost packet may cost a timeout, so one transfer's time
// depends on which of its few hundred packets are lost: it takes tens of
// transfers for a round's figure not to turn on one unlucky packet. Each
// round draws new seeds, the same for the three servers.
//
// Then, through a network's latency: lossyTransfers transfers of 512 KiB
// by pin/tftp's lock-step client (blksize 1468), each through a relay of its own
// that loses nothing but holds every packet lanDelay each way, lossyAtOnce
// at a time; MB/s as at 1% loss, what one client sees. On loopback a
// round trip costs next to nothing and the 0% figure is what the machine's
// two cores can push through client and server together; on a boot
// network a lock-step transfer gets a block per round trip, unless the
// server sends ahead of the acknowledgements (rackd's window for clients
// that ask for none).
//
// rounds rounds, the servers' order turned each round, their 0% figures
// taken one after the other before the 1% ones; each server's
// MB/s per round with the median, and rackd's ratio to each peer per
// round (min/median/max), are printed last. Run with -benchtime=1x.
func BenchmarkTFTPVsPeers(b *testing.B) {
	root, err := os.MkdirTemp("", "rackplane-tftpvs-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Chmod(root, 0o755)
	if _, err := exec.LookPath("curl"); err != nil {
		b.Fatal("curl missing: install Debian package curl")
	}
	// curl's copies of the 0% part go to memory, not to the disk.
	out, err := os.MkdirTemp("/dev/shm", "rackplane-tftpvs-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(out)
	const clean, lossy = 8 << 20, 512 << 10
	files := map[string][]byte{"clean.bin": handofftest.Pattern(clean), "lossy.bin": handofftest.Pattern(lossy)}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(root, n), c, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	rackd := fmt.Sprintf("rackd-window-%d", tftp.DefaultWindow)
	type server struct {
		name string
		port int
		pid  int
		stop func()
	}
	var servers []server
	for _, p := range peers(b) {
		if p.name != rackd && p.name != "atftpd" && p.name != "tftpd-hpa" {
			continue
		}
		port, cmd, stop := startPeer(b, p, root)
		defer stop()
		servers = append(servers, server{p.name, port, cmd.Process.Pid, stop})
	}
	const (
		rounds         = 5
		cleanPasses    = 3
		lossyTransfers = 40
		lossyAtOnce    = 20
	)
	workloads := []string{"0% loss, 20 x 8 MiB", fmt.Sprintf("1%% loss, %d x 512 KiB", lossyTransfers),
		fmt.Sprintf("0%% loss, %s each way, %d x 512 KiB", lanDelay, lossyTransfers)}
	got := map[string][]float64{} // workload/server → MB/s per round
	// The 0% figure turns on the client's cost as well as the server's
	// (both share the two cores), so the server's own CPU per MB is taken
	// too: what each costs the rack for the same bytes. tftpd-hpa serves
	// each transfer in a child that the kernel reaps without adding its
	// time to the server's (SIGCHLD ignored), so its CPU cannot be read
	// this way and is left out.
	cpuPerMB := map[string][]float64{} // server → CPU ms per MB per round
	for i := 0; i < b.N; i++ {
		for round := 0; round < rounds; round++ {
			order := slices.Clone(servers)
			for k := 0; k < round; k++ {
				order = append(order[1:], order[0])
			}
			// The servers' 0% figures of a round are taken in cleanPasses
			// passes, one server right after the other, before the longer
			// 1% part, so that a burst of the machine's load weighs alike
			// on each.
			cleanTook := map[string]time.Duration{}
			cleanCPU := map[string]float64{}
			for range cleanPasses {
				for _, s := range order {
					cpu0 := cpuSeconds(s.pid, false)
					took, err := cleanPass(s.port, out, files["clean.bin"])
					if err != nil {
						b.Fatalf("%s at 0%% loss: %v", s.name, err)
					}
					cleanTook[s.name] += took
					cleanCPU[s.name] += cpuSeconds(s.pid, false) - cpu0
				}
			}
			for _, s := range order {
				mb := float64(cleanPasses*20*clean) / 1e6
				got[workloads[0]+"/"+s.name] = append(got[workloads[0]+"/"+s.name], mb/cleanTook[s.name].Seconds())
				cpuPerMB[s.name] = append(cpuPerMB[s.name], cleanCPU[s.name]*1e3/mb)
			}
			for _, s := range order {
				// 1% loss: each transfer through a relay of its own.
				took, err := lossyRound(s.port, files["lossy.bin"], int64(round)*1000, lossyTransfers, lossyAtOnce)
				if err != nil {
					b.Fatalf("%s at 1%% loss: %v", s.name, err)
				}
				got[workloads[1]+"/"+s.name] = append(got[workloads[1]+"/"+s.name], lossyTransfers*lossy/took.Seconds()/1e6)
			}
			for _, s := range order {
				// A network's round trip: lock-step clients, as boot
				// firmware is, each through a relay of its own.
				took, err := lanRound(s.port, "lossy.bin", files["lossy.bin"], lossyTransfers, lossyAtOnce)
				if err != nil {
					b.Fatalf("%s through %s each way: %v", s.name, lanDelay, err)
				}
				got[workloads[2]+"/"+s.name] = append(got[workloads[2]+"/"+s.name], lossyTransfers*lossy/took.Seconds()/1e6)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	var t strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&t, "\nBenchmarkTFTPVsPeers: MB/s per round (%d rounds, order turned each round); load average %s", rounds, load)
	for _, w := range workloads {
		fmt.Fprintf(&t, "%-22s", w)
		for _, s := range servers {
			fmt.Fprintf(&t, "  %s %s (median %.3g)", s.name, fmtRounds(got[w+"/"+s.name]), median(got[w+"/"+s.name]))
		}
		t.WriteString("\n")
	}
	fmt.Fprintf(&t, "%-22s", "0% loss, CPU ms/MB")
	for _, s := range servers {
		if !cpuCounted(s.name) {
			fmt.Fprintf(&t, "  %s n/a (a child per transfer)", s.name)
			continue
		}
		fmt.Fprintf(&t, "  %s %s (median %.3g)", s.name, fmtRounds(cpuPerMB[s.name]), median(cpuPerMB[s.name]))
	}
	t.WriteString("\n")
	t.WriteString("ratios rackd/peer per round, min/median/max:\n")
	for _, w := range workloads {
		for _, s := range servers {
			if s.name == rackd {
				continue
			}
			var r []float64
			for k := range got[w+"/"+rackd] {
				r = append(r, got[w+"/"+rackd][k]/got[w+"/"+s.name][k])
			}
			slices.Sort(r)
			fmt.Fprintf(&t, "  %-22s rackd/%-9s %.2f / %.2f / %.2f\n", w, s.name, r[0], r[len(r)/2], r[len(r)-1])
		}
	}
	// MB per server CPU second, rackd's over the peer's: above 1, rackd
	// costs less for the same bytes.
	for _, s := range servers {
		if s.name == rackd || !cpuCounted(s.name) {
			continue
		}
		var r []float64
		for k := range cpuPerMB[rackd] {
			if cpuPerMB[rackd][k] > 0 {
				r = append(r, cpuPerMB[s.name][k]/cpuPerMB[rackd][k])
			}
		}
		if len(r) == 0 {
			continue
		}
		slices.Sort(r)
		fmt.Fprintf(&t, "  %-22s rackd/%-9s %.2f / %.2f / %.2f  (MB per server CPU second)\n", "0% loss, 20 x 8 MiB", s.name, r[0], r[len(r)/2], r[len(r)-1])
	}
	// b.Log of a benchmark does not show when it is not the last run.
	fmt.Print(t.String())
}

// lanDelay is the latency the bench's network part puts each way between
// client and server: a boot network's switch and a firmware's network
// stack, which answers a block when its timer next polls the NIC, come to
// a round trip of a millisecond or more, where loopback's is a few
// microseconds. (Go's timers may hold a packet somewhat longer.)
const lanDelay = 500 * time.Microsecond

func fmtRounds(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3g", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// lossyRound fetches lossy.bin n times from the server on port, each
// through a relay losing 1% of the packets each way, seeded seed+1 to
// seed+n, atOnce at a time, and returns the sum of their durations.
func lossyRound(port int, want []byte, seed int64, n, atOnce int) (time.Duration, error) {
	return relayedRound(port, n, atOnce,
		func(i int) tftptest.Loss { return tftptest.Loss{Rate: 0.01, Seed: seed + int64(i)} },
		func(addr string) error { return fetchLossy(addr, "lossy.bin", want, 8) })
}

// lanRound fetches name n times from the server on port, each through a
// relay that holds every packet lanDelay each way and loses none, atOnce
// at a time, with the lock-step client of the 0% loss part; it returns
// the sum of their durations.
func lanRound(port int, name string, want []byte, n, atOnce int) (time.Duration, error) {
	return relayedRound(port, n, atOnce,
		func(int) tftptest.Loss { return tftptest.Loss{Delay: lanDelay} },
		func(addr string) error { return fetchFrom(addr, name, want) })
}

// relayedRound makes n transfers from the server on port, the i-th (1 to
// n) through a relay with loss(i) of its own, atOnce at a time, and
// returns the sum of their durations.
func relayedRound(port, n, atOnce int, loss func(i int) tftptest.Loss, fetch func(addr string) error) (time.Duration, error) {
	var (
		mu     sync.Mutex
		total  time.Duration
		failed error
		wg     sync.WaitGroup
	)
	seeds := make(chan int, n)
	for i := 1; i <= n; i++ {
		seeds <- i
	}
	close(seeds)
	for range atOnce {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sd := range seeds {
				relay, err := tftptest.NewRelay(fmt.Sprintf("127.0.0.1:%d", port), loss(sd))
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				start := time.Now()
				err = fetch(relay.Addr().String())
				took := time.Since(start)
				relay.Close()
				mu.Lock()
				total += took
				if err != nil {
					failed = fmt.Errorf("%s: %w", loss(sd), err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return total, failed
}

// cleanPass fetches clean.bin 20 times at once from the server on port,
// each with curl (blksize 1468) into a file in out, and returns how long
// it took; then it checks every file against want. curl is a real
// client, and one in C: it costs the machine's two cores less per block
// than a Go client does, so the servers' own costs weigh more in the
// figure.
func cleanPass(port int, out string, want []byte) (time.Duration, error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed error
	)
	start := time.Now()
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := filepath.Join(out, fmt.Sprintf("clean-%d", i))
			b, err := exec.Command("curl", "-sS", "--max-time", "120", "--tftp-blksize", "1468", "-o", o,
				fmt.Sprintf("tftp://127.0.0.1:%d/clean.bin", port)).CombinedOutput()
			if err != nil {
				mu.Lock()
				failed = fmt.Errorf("curl: %v: %s", err, b)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if failed != nil {
		return took, failed
	}
	for i := range 20 {
		o := filepath.Join(out, fmt.Sprintf("clean-%d", i))
		got, err := os.ReadFile(o)
		if err != nil {
			return took, err
		}
		if !bytes.Equal(got, want) {
			return took, fmt.Errorf("curl's copy %d: %d bytes, not the file's %d", i, len(got), len(want))
		}
		os.Remove(o)
	}
	return took, nil
}

// cpuCounted says whether a server's CPU is its process's own: not so for
// tftpd-hpa, whose transfers run in children it does not wait for.
func cpuCounted(name string) bool { return name != "tftpd-hpa" }
