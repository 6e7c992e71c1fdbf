package tftp_test

import (
	"fmt"
	"os"
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
// process over the same files: at 0% loss, 20 concurrent transfers of
// 8 MiB straight to the server; at 1% loss, three transfers of 512 KiB
// one after the other, each through tftptest's lossy relay with its own
// seed (the same three seeds for every server), the client asking for
// windowsize 8 (atftpd and rackd grant it, tftpd-hpa goes lock-step).
// Three rounds, the servers' order turned each round; the medians and
// rackd's ratio to each peer (min/median/max over the rounds) are
// printed last. Run with -benchtime=1x.
func BenchmarkTFTPVsPeers(b *testing.B) {
	root, err := os.MkdirTemp("", "rackplane-tftpvs-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Chmod(root, 0o755)
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
		stop func()
	}
	var servers []server
	for _, p := range peers(b) {
		if p.name != rackd && p.name != "atftpd" && p.name != "tftpd-hpa" {
			continue
		}
		port, _, stop := startPeer(b, p, root)
		defer stop()
		servers = append(servers, server{p.name, port, stop})
	}
	const rounds = 3
	workloads := []string{"0% loss, 20 x 8 MiB", "1% loss, 3 x 512 KiB"}
	got := map[string][]float64{} // workload/server → MB/s per round
	for i := 0; i < b.N; i++ {
		for round := 0; round < rounds; round++ {
			order := slices.Clone(servers)
			for k := 0; k < round; k++ {
				order = append(order[1:], order[0])
			}
			for _, s := range order {
				// 0% loss: 20 at once.
				var wg sync.WaitGroup
				var mu sync.Mutex
				var failed error
				start := time.Now()
				for c := 0; c < 20; c++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := fetch(s.port, "clean.bin", files["clean.bin"]); err != nil {
							mu.Lock()
							failed = err
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				if failed != nil {
					b.Fatalf("%s at 0%% loss: %v", s.name, failed)
				}
				got[workloads[0]+"/"+s.name] = append(got[workloads[0]+"/"+s.name], 20*clean/time.Since(start).Seconds()/1e6)

				// 1% loss: through the relay, one after the other.
				var took time.Duration
				for _, seed := range []int64{7440, 2349, 1350} {
					relay, err := tftptest.NewRelay(fmt.Sprintf("127.0.0.1:%d", s.port), tftptest.Loss{Rate: 0.01, Seed: seed})
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					err = fetchLossy(relay.Addr().String(), "lossy.bin", files["lossy.bin"], 8)
					took += time.Since(start)
					relay.Close()
					if err != nil {
						b.Fatalf("%s at 1%% loss (seed %d): %v", s.name, seed, err)
					}
				}
				got[workloads[1]+"/"+s.name] = append(got[workloads[1]+"/"+s.name], 3*lossy/took.Seconds()/1e6)
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
			fmt.Fprintf(&t, "  %s %s (median %.1f)", s.name, fmtRounds(got[w+"/"+s.name]), median(got[w+"/"+s.name]))
		}
		t.WriteString("\n")
	}
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
	// b.Log of a benchmark does not show when it is not the last run.
	fmt.Print(t.String())
}

func fmtRounds(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}
