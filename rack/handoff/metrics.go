package handoff

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// FrontendMetrics are what an operator watches of one boot front-end
// (TFTP, HTTP): transfers in flight, bytes sent, and failures by kind.
type FrontendMetrics struct {
	InFlight prometheus.Gauge
	Bytes    prometheus.Counter
	Errors   *prometheus.CounterVec
}

// NewFrontendMetrics makes the metrics <prefix>_transfers_in_flight,
// <prefix>_sent_bytes_total and <prefix>_errors_total{kind} and registers
// them on reg when it is not nil. what names the protocol in their help,
// kinds lists the error kinds.
func NewFrontendMetrics(reg prometheus.Registerer, prefix, what, kinds string) (*FrontendMetrics, error) {
	m := &FrontendMetrics{
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: prefix + "_transfers_in_flight", Help: what + " transfers being sent.",
		}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "_sent_bytes_total", Help: "Bytes of boot file content sent over " + what + ".",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_errors_total", Help: what + " requests that failed, by kind: " + kinds + ".",
		}, []string{"kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.InFlight, m.Bytes, m.Errors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register %s metrics: %w", prefix, err)
			}
		}
	}
	return m, nil
}
