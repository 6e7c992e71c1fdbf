package region_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

type bootStatsOut struct {
	Window, Step string
	Since, Until time.Time
	Buckets      []struct {
		Start                                             time.Time
		Boots, Requests, Transfers, TransferErrors, Bytes int64 `json:",omitempty"`
	}
	Error struct{ Code, Message string }
}

// TestBootStatsAPI: GET /api/v1/stats/boots answers the last window in
// buckets aligned to the step, the last one holding now; a transfer a
// rack reports is in it as soon as it is logged; the bounds and unknown
// parameters are 400s naming what is wrong.
func TestBootStatsAPI(t *testing.T) {
	h := startRegion(t)
	var out bootStatsOut
	if code := h.getJSON("/api/v1/stats/boots", &out); code != 200 || out.Window != "1h0m0s" || out.Step != "1m0s" || len(out.Buckets) != 60 {
		t.Fatalf("default stats: %d %+v", code, out)
	}
	if now := time.Now(); out.Until.Before(now) || out.Until.Sub(now) > time.Minute || out.Until.Truncate(time.Minute) != out.Until {
		t.Errorf("the window ends %s, now is %s: want the end of the current minute", out.Until, now)
	}

	rack := uuid.NewString()
	ev, err := events.New(events.RackSource(rack), events.TypeBootTransfer, events.RackStreamName(rack), time.Now(),
		events.BootTransfer{Protocol: "tftp", FileName: "pxelinux.0", Route: "root", Bytes: 46_000, Size: 46_000, DurationMS: 12})
	if err != nil {
		t.Fatal(err)
	}
	h.publishRaw(rack, ev)
	h.eventually(10*time.Second, "the transfer in the stats", func() error {
		var out bootStatsOut
		if code := h.getJSON("/api/v1/stats/boots?window=10m&step=10s", &out); code != 200 || len(out.Buckets) != 60 {
			return fmt.Errorf("%d %+v", code, out)
		}
		var bytes, transfers int64
		for _, b := range out.Buckets {
			bytes += b.Bytes
			transfers += b.Transfers
		}
		if bytes != 46_000 || transfers != 1 {
			return fmt.Errorf("%d bytes in %d transfers", bytes, transfers)
		}
		return nil
	})

	for _, c := range []struct{ query, want string }{
		{"window=25h", "window must be a duration"},
		{"step=5s", "step must be a duration"},
		{"window=24h&step=10s", "8640 buckets, more than 1440"},
		{"since=1h", `"since": no such query parameter (GET /api/v1/stats/boots takes window, step)`},
	} {
		var out bootStatsOut
		if code := h.getJSON("/api/v1/stats/boots?"+c.query, &out); code != 400 || out.Error.Code != "invalid" || !strings.Contains(out.Error.Message, c.want) {
			t.Errorf("?%s: %d %+v, want 400 saying %q", c.query, code, out.Error, c.want)
		}
	}
}
