package power

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// BenchmarkStatusPolling polls the power status of 1,000 BMCs driven by a
// shell script driver (each BMC a file; power-status reads it with shell
// builtins), each round all of them at once, as a region's poll of one
// rack would: through the Manager alone, and through NATS rpc from a
// client, at a few concurrencies. It reports machines polled per second.
//
//	go test -run X -bench StatusPolling -benchtime 3x ./rack/power/
func BenchmarkStatusPolling(b *testing.B) {
	const machines = 1000
	search := b.TempDir()
	dir := filepath.Join(search, "benchbmc")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	scriptruntest.WriteFile(b, filepath.Join(dir, "power-status"), "#!/bin/sh\nread s < \"$POWER_ADDRESS\"\necho \"$s\"\n", 0o755)
	for _, s := range []string{"power-on", "power-off"} {
		scriptruntest.WriteFile(b, filepath.Join(dir, s), "#!/bin/sh\n", 0o755)
	}
	bmcs := b.TempDir()
	reqs := make([]Request, machines)
	for i := range reqs {
		addr := filepath.Join(bmcs, fmt.Sprintf("bmc%04d", i))
		state := []string{"on", "off"}[i%2]
		scriptruntest.WriteFile(b, addr, state+"\n", 0o644)
		reqs[i] = Request{MachineID: fmt.Sprintf("m%04d", i), Driver: "benchbmc", Action: events.PowerStatus,
			Parameters: events.PowerParameters{Address: addr, Username: "admin", Password: "bench-secret"}}
	}
	for _, via := range []string{"manager", "rpc"} {
		for _, conc := range []int{8, 32, 64} {
			b.Run(fmt.Sprintf("%s/concurrency=%d", via, conc), func(b *testing.B) {
				m := newManager(b, Config{Settings: Settings{SearchPath: []string{search}, Concurrency: conc, Timeout: time.Minute}})
				poll := func(r Request) Reply { return m.Do(context.Background(), r) }
				if via == "rpc" {
					nc := rpcRack(b, m)
					poll = func(r Request) Reply {
						var reply Reply
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
						defer cancel()
						if err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, events.MethodPower), r, &reply); err != nil {
							b.Error(err)
						}
						return reply
					}
				}
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					var wg sync.WaitGroup
					for i, r := range reqs {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if got := poll(r); !got.OK || got.State != []string{"on", "off"}[i%2] {
								b.Errorf("%s: %+v", r.MachineID, got)
							}
						}()
					}
					wg.Wait()
				}
				b.ReportMetric(float64(machines*b.N)/time.Since(start).Seconds(), "machines/s")
			})
		}
	}
}
