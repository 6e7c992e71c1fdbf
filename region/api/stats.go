package api

import (
	"context"
	"net/http"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/postgres"
)

// Stats counts what the event log holds for dashboards.
type Stats interface {
	BootStats(ctx context.Context, since, until time.Time, step time.Duration) ([]postgres.BootBucket, error)
}

func (s *Server) statsRoutes() {
	s.handle("GET /api/v1/stats/boots", s.bootStats, "window", "step")
}

type bootStatsPage struct {
	Window  string                `json:"window"`
	Step    string                `json:"step"`
	Since   time.Time             `json:"since"`
	Until   time.Time             `json:"until"`
	Buckets []postgres.BootBucket `json:"buckets"`
}

// bootStats is the boot traffic of the last window (default 1h) in
// buckets of step (default 1m), by event time. The buckets are aligned to
// step, the last one holding now, so that successive calls agree on
// their edges and a dashboard can slide its chart by whole buckets.
func (s *Server) bootStats(w http.ResponseWriter, r *http.Request) error {
	if s.stats == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "boot stats are not served here")
	}
	window, err := QueryDuration(r, "window", time.Hour, time.Second, postgres.MaxStatsWindow)
	if err != nil {
		return err
	}
	step, err := QueryDuration(r, "step", time.Minute, postgres.MinStatsStep, postgres.MaxStatsWindow)
	if err != nil {
		return err
	}
	if n := (window + step - 1) / step; n > postgres.MaxStatsBuckets {
		return rackplane.Errorf(rackplane.EINVALID, "window %s in steps of %s is %d buckets, more than %d: take a longer step", window, step, n, postgres.MaxStatsBuckets)
	}
	until := time.Now().UTC().Truncate(step).Add(step)
	since := until.Add(-window).Truncate(step)
	if since.Add(window).Before(until) {
		// A window that is no whole number of steps still ends with now.
		window = until.Sub(since)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	buckets, err := s.stats.BootStats(ctx, since, until, step)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, bootStatsPage{Window: window.String(), Step: step.String(), Since: since, Until: until, Buckets: buckets})
}
