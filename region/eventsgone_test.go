package region_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestEventsWaitClientGone: a client that leaves while its long poll of
// the event log waits (a page closed or moved on) is counted as 499,
// nobody's failure, not as a 500 of the region's.
func TestEventsWaitClientGone(t *testing.T) {
	h := startRegion(t)
	var end eventsPage
	h.getJSON("/api/v1/events?limit=1000", &end)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.api+"/api/v1/events?after="+end.Next+"&wait=30s", nil)
	req.Header.Set("Authorization", "Bearer "+h.token)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the wait answered %s before its client left", resp.Status)
	}
	const gone = `rackplane_region_http_requests_total{route="GET /api/v1/events",status="499"}`
	h.eventually(5*time.Second, "the request counted as 499", func() error {
		if v := h.metric(gone); v != 1 {
			return fmt.Errorf("%s %v", gone, v)
		}
		return nil
	})
	if v := h.metric(`rackplane_region_http_requests_total{route="GET /api/v1/events",status="500"}`); v != -1 {
		t.Errorf("the request counted as a 500 too: %v", v)
	}
}
