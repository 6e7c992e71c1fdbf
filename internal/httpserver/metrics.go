package httpserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one server's; the server label tells them apart, so several
// servers may share a registry.
type metrics struct {
	accepted     prometheus.Counter
	shed         *prometheus.CounterVec
	refused      prometheus.Counter
	acceptErrors prometheus.Counter
	requests     *prometheus.CounterVec
}

func newMetrics(name string, open func() float64, reg prometheus.Registerer) (*metrics, error) {
	labels := prometheus.Labels{"server": name}
	m := &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_http_connections_accepted_total", ConstLabels: labels,
			Help: "HTTP connections accepted."}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rackplane_http_connections_shed_total", ConstLabels: labels,
			Help: "Idle HTTP connections closed, idle longest first, to make room for a new one: at the connection limit (limit) or out of file descriptors (fd_limit)."},
			[]string{"reason"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_http_connections_refused_total", ConstLabels: labels,
			Help: "New HTTP connections answered 503 and closed: every open connection was inside a handler."}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_http_accept_errors_total", ConstLabels: labels,
			Help: "Accepts that failed for want of file descriptors."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rackplane_http_requests_refused_total", ConstLabels: labels,
			Help: "Requests refused before or while their body was read: bad_text (NUL or not UTF-8 in path or query, 400), body_too_large (413), body_timeout (not in within the read timeout)."},
			[]string{"reason"}),
	}
	for _, r := range []string{"limit", "fd_limit"} {
		m.shed.WithLabelValues(r)
	}
	for _, r := range []string{"bad_text", "body_too_large", "body_timeout"} {
		m.requests.WithLabelValues(r)
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_http_connections_open", ConstLabels: labels,
		Help: "HTTP connections open."}, open)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{gauge, m.accepted, m.shed, m.refused, m.acceptErrors, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpserver %s: metrics: %w", name, err)
		}
	}
	return m, nil
}
