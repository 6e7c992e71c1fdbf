package region_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

type eventsPage struct {
	Events []struct{ Type, Subject string }
	Next   string
}

// TestEventsWait: a client following the log waits at its end with
// ?wait= instead of polling. The request returns with the next event as
// soon as it is appended, or empty when the wait is up, with a cursor to
// go on from; a bad wait is refused.
func TestEventsWait(t *testing.T) {
	h := startRegion(t)
	var end eventsPage
	h.getJSON("/api/v1/events?limit=1000", &end)
	if end.Next == "" {
		t.Fatal("no cursor at the end of the log")
	}

	// Nothing comes: empty after the wait, the cursor unchanged.
	begin := time.Now()
	var empty eventsPage
	if code := h.getJSON("/api/v1/events?after="+end.Next+"&wait=300ms", &empty); code != 200 || len(empty.Events) != 0 || empty.Next != end.Next {
		t.Fatalf("wait with nothing to come: %d %+v", code, empty)
	}
	if waited := time.Since(begin); waited < 300*time.Millisecond {
		t.Fatalf("returned empty after %s, before its wait of 300ms", waited)
	}

	// Something comes: the waiting request returns with it, well before
	// its wait is up.
	type result struct {
		page  eventsPage
		code  int
		after time.Duration
	}
	done := make(chan result, 1)
	go func() {
		begin := time.Now()
		resp, err := h.client.Get(h.api + "/api/v1/events?after=" + end.Next + "&wait=50s")
		if err != nil {
			done <- result{code: -1}
			return
		}
		defer resp.Body.Close()
		var p eventsPage
		json.NewDecoder(resp.Body).Decode(&p)
		done <- result{p, resp.StatusCode, time.Since(begin)}
	}()
	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "awaited", "macs": []string{"52:54:00:ee:00:09"}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var got result
	select {
	case got = <-done:
	case <-time.After(40 * time.Second):
		t.Fatal("the waiting request did not return within 40s of an append")
	}
	if got.code != 200 || len(got.page.Events) == 0 || got.page.Events[0].Subject != "machine/"+m.ID || got.page.Next == end.Next {
		t.Fatalf("waiting request: %d %+v", got.code, got.page)
	}
	t.Logf("the waiting request returned %s after it was sent, with %s", got.after.Round(time.Millisecond), got.page.Events[0].Type)

	for _, bad := range []string{"2m", "-1s", "soon"} {
		var e apiError
		if code := h.getJSON("/api/v1/events?wait="+bad, &e); code != 400 || !strings.Contains(e.Error.Message, "wait must be a duration") {
			t.Fatalf("wait=%s: %d %+v", bad, code, e)
		}
	}
}

// TestTailOfTheLogs: a screen showing the newest events or audit entries
// asks for the last N instead of paging through the whole log, gets them
// oldest first, and follows on from the cursor it got.
func TestTailOfTheLogs(t *testing.T) {
	h := startRegion(t)
	var ids []string
	for i := 1; i <= 5; i++ {
		var m machineOut
		if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": fmt.Sprintf("tail%d", i), "macs": []string{fmt.Sprintf("52:54:00:ef:00:0%d", i)}}, &m); code != 201 {
			t.Fatalf("create machine: %d", code)
		}
		ids = append(ids, m.ID)
	}
	const created = "rackplane.region.machine_created.v1"
	var tail eventsPage
	if code := h.getJSON("/api/v1/events?last=3&type="+created, &tail); code != 200 || len(tail.Events) != 3 {
		t.Fatalf("last 3: %d %+v", code, tail)
	}
	for i, e := range tail.Events {
		if e.Subject != "machine/"+ids[2+i] {
			t.Fatalf("last 3 are %+v, want machines 3, 4, 5 in that order", tail.Events)
		}
	}
	var m machineOut
	h.do("POST", "/api/v1/machines", map[string]any{"hostname": "tail6", "macs": []string{"52:54:00:ef:00:06"}}, &m)
	var more eventsPage
	if code := h.getJSON("/api/v1/events?type="+created+"&after="+tail.Next, &more); code != 200 || len(more.Events) != 1 || more.Events[0].Subject != "machine/"+m.ID {
		t.Fatalf("following on from the tail: %d %+v", code, more)
	}

	var audit struct {
		Entries []struct {
			ID     int64
			Target string
		}
		Next int64
	}
	if code := h.getJSON("/api/v1/audit?last=2&action=POST+/api/v1/machines", &audit); code != 200 || len(audit.Entries) != 2 ||
		audit.Entries[0].Target != "machine/"+ids[4] || audit.Entries[1].Target != "machine/"+m.ID || audit.Next != audit.Entries[1].ID {
		t.Fatalf("last 2 audit entries: %d %+v", code, audit)
	}

	for _, bad := range []string{"/api/v1/events?last=0", "/api/v1/events?last=5&after=" + tail.Next, "/api/v1/events?last=5&wait=1s",
		"/api/v1/audit?last=2000", "/api/v1/audit?last=5&after=3"} {
		var e apiError
		if code := h.getJSON(bad, &e); code != 400 || !strings.Contains(e.Error.Message, "last") {
			t.Fatalf("%s: %d %+v", bad, code, e)
		}
	}
}
