// Package natsmetrics exposes the state of a NATS connection as Prometheus
// metrics: whether a rack or region is connected is the first thing an
// operator checks when boots stop being reported.
package natsmetrics

import (
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Register adds nc's metrics to reg. They are read from the connection
// when scraped, so they cost nothing in between.
func Register(reg prometheus.Registerer, nc *nats.Conn) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_nats_connected",
			Help: "1 while connected to NATS, else 0."}, func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rackplane_nats_reconnects_total",
			Help: "Times the connection to NATS was re-established."}, func() float64 { return float64(nc.Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rackplane_nats_messages_sent_total",
			Help: "Messages sent to NATS."}, func() float64 { return float64(nc.Stats().OutMsgs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rackplane_nats_messages_received_total",
			Help: "Messages received from NATS."}, func() float64 { return float64(nc.Stats().InMsgs) }),
	)
}
