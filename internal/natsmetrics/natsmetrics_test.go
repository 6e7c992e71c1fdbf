package natsmetrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/internal/natsmetrics"
	"github.com/rackplane/rackplane/internal/natsserver"
)

func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestConnectionMetricsFollowAnOutage: the connected gauge drops to 0
// while the server is away and the reconnect counter counts its return.
func TestConnectionMetricsFollowAnOutage(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	reg := prometheus.NewRegistry()
	natsmetrics.Register(reg, nc)
	if err := nc.Publish("x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	if v := value(t, reg, "rackplane_nats_connected"); v != 1 {
		t.Fatalf("connected = %v while connected", v)
	}
	if v := value(t, reg, "rackplane_nats_messages_sent_total"); v < 1 {
		t.Fatalf("messages sent = %v after a publish", v)
	}
	waitFor := func(name string, want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for value(t, reg, name) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, want %v", name, value(t, reg, name), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ns.Stop()
	waitFor("rackplane_nats_connected", 0)
	ns.Restart()
	waitFor("rackplane_nats_connected", 1)
	waitFor("rackplane_nats_reconnects_total", 1)
}
