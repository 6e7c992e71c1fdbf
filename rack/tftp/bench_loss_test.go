package tftp_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	itftp "github.com/rackplane/rackplane/internal/tftp"
	"github.com/rackplane/rackplane/internal/tftp/tftptest"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
)

// BenchmarkTFTPLoss measures TFTP through the lossy relay of tftptest at
// 0%, 1% and 5% random loss in both directions: rackd with window 8 and
// window 1, atftpd and tftpd-hpa, each its own process, all fetched from
// by the same client of internal/tftp, which asks for timeout 1 (all four
// servers take it, so a loss costs each the same second) and blksize
// 1428, once with windowsize 8 and once without. atftpd grants the
// windowsize and tftpd-hpa does not; rackd with window 1 declines it, and
// with window 8 sends the lock-step client 8 blocks ahead. Each cell is
// three transfers, one after the other, each through a relay of its own
// seed (the same three seeds for every cell), of a size that keeps the
// cell to seconds: losses cost whole timeouts, so at 5% MB/s hardly
// depends on the size, but much on which packets are lost. Run with
// -benchtime=1x; a table of it all ends the output.
func BenchmarkTFTPLoss(b *testing.B) {
	root, err := os.MkdirTemp("", "rackplane-tftploss-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Chmod(root, 0o755)
	levels := []struct {
		name string
		rate float64
		size int
	}{
		{"0pct", 0, 16 << 20},
		{"1pct", 0.01, 512 << 10},
		{"5pct", 0.05, 128 << 10},
	}
	files := map[int][]byte{}
	for _, l := range levels {
		files[l.size] = handofftest.Pattern(l.size)
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("f%d.bin", l.size)), files[l.size], 0o644); err != nil {
			b.Fatal(err)
		}
	}
	clients := []struct {
		name   string
		window int
	}{
		{"windowsize-8", 8},
		{"lock-step", 0},
	}
	type cell struct {
		mbps     float64
		lost     int64
		failures int
		took     time.Duration
	}
	results := map[string]cell{} // client/level/server
	var servers []string
	for _, p := range peers(b) {
		servers = append(servers, p.name)
		port, _, stop := startPeer(b, p, root)
		for _, c := range clients {
			for _, l := range levels {
				b.Run(c.name+"/"+l.name+"/"+p.name, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						var r cell
						for _, seed := range []int64{7440, 2349, 1350} {
							relay, err := tftptest.NewRelay(fmt.Sprintf("127.0.0.1:%d", port), tftptest.Loss{Rate: l.rate, Seed: seed})
							if err != nil {
								b.Fatal(err)
							}
							start := time.Now()
							err = fetchLossy(relay.Addr().String(), fmt.Sprintf("f%d.bin", l.size), files[l.size], c.window)
							r.took += time.Since(start)
							_, toServer := relay.Counts(tftptest.ToServer)
							_, toClient := relay.Counts(tftptest.ToClient)
							relay.Close()
							r.lost += toServer + toClient
							if err != nil {
								r.failures++
								b.Logf("%s: %v", p.name, err)
							}
						}
						if r.failures == 0 {
							r.mbps = 3 * float64(l.size) / r.took.Seconds() / 1e6
						}
						results[c.name+"/"+l.name+"/"+p.name] = r
						b.ReportMetric(r.mbps, "MB/s")
						b.ReportMetric(float64(r.lost), "lost-packets")
						b.ReportMetric(float64(r.failures), "failures")
						b.ReportMetric(0, "ns/op")
					}
				})
			}
		}
		stop()
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\nBenchmarkTFTPLoss: MB/s through the relay (packets lost, seconds taken), three transfers of size each:\n")
	fmt.Fprintf(&t, "%-13s %-5s %9s", "client", "loss", "size")
	for _, s := range servers {
		fmt.Fprintf(&t, " %22s", s)
	}
	t.WriteString("\n")
	for _, c := range clients {
		for _, l := range levels {
			fmt.Fprintf(&t, "%-13s %-5s %9s", c.name, strings.TrimSuffix(l.name, "pct")+"%", sizeName(l.size))
			for _, s := range servers {
				r, ok := results[c.name+"/"+l.name+"/"+s]
				switch {
				case !ok:
					fmt.Fprintf(&t, " %22s", "-")
				case r.failures > 0:
					fmt.Fprintf(&t, " %22s", fmt.Sprintf("%d FAILED (%d, %.1fs)", r.failures, r.lost, r.took.Seconds()))
				default:
					fmt.Fprintf(&t, " %22s", fmt.Sprintf("%.3g (%d, %.1fs)", r.mbps, r.lost, r.took.Seconds()))
				}
			}
			t.WriteString("\n")
		}
	}
	// b.Log of a benchmark that ran others does not show.
	fmt.Print(t.String())
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// fetchLossy fetches name through addr with the client of internal/tftp:
// blksize 1428, timeout 1 asked of the server, windowsize when window > 1;
// it resends after its own timeout of a second, without a random wait.
func fetchLossy(addr, name string, want []byte, window int) error {
	c, err := itftp.NewClient(addr)
	if err != nil {
		return err
	}
	c.SetBlockSize(1428)
	c.SetWindowSize(window)
	c.SetTimeout(time.Second)
	c.RequestTimeout(true)
	c.SetRetries(8)
	c.SetBackoff(func(int) time.Duration { return 0 })
	return receiveCompare(c.Receive, name, want)
}
