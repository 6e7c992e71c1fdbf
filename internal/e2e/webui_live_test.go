package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// requests records the API requests a browser tab makes, from Chromium's
// network events.
type requests struct {
	mu       sync.Mutex
	seen     []request
	inFlight map[network.RequestID]string // requests sent and not yet answered, but the long poll
}

type request struct {
	at  time.Time
	url string
}

func (b *browser) recordRequests() *requests {
	b.t.Helper()
	r := &requests{inFlight: map[network.RequestID]string{}}
	err := chromedp.Listen(b.ctx, func(ev any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			if strings.Contains(e.Request.URL, "/api/") {
				r.seen = append(r.seen, request{at: time.Now(), url: e.Request.URL})
				if !strings.Contains(e.Request.URL, "wait=") {
					r.inFlight[e.RequestID] = e.Request.URL
				}
			}
		case *network.EventLoadingFinished:
			delete(r.inFlight, e.RequestID)
		case *network.EventLoadingFailed:
			delete(r.inFlight, e.RequestID)
		}
	})
	if err == nil {
		err = chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{})
			return err
		}))
	}
	if err != nil {
		b.t.Fatalf("record the page's requests: %v", err)
	}
	return r
}

// since are the paths and queries of the requests made after t.
func (r *requests) since(t time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.seen {
		if q.at.After(t) {
			u, err := url.Parse(q.url)
			if err != nil {
				out = append(out, q.url)
				continue
			}
			out = append(out, u.RequestURI())
		}
	}
	return out
}

// idle waits d with the page left alone and fails unless everything it
// asked the API in that time is the long poll of the event log: a
// screen that follows the log through the page's follower makes no
// request of its own while nothing happens.
func (b *browser) idle(r *requests, d time.Duration, screen string) {
	b.t.Helper()
	// The window starts once the screen has loaded what it shows: no
	// request but the long poll unanswered, and none begun for half a
	// second. A panel that loads late on a busy machine is loading, not
	// polling.
	settled := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.inFlight) > 0 {
			return false
		}
		for _, q := range r.seen {
			if !strings.Contains(q.url, "wait=") && time.Since(q.at) < 500*time.Millisecond {
				return false
			}
		}
		return true
	}
	if !netnstest.WaitFor(30*time.Second, settled) {
		r.mu.Lock()
		b.t.Errorf("%s: requests still unanswered after 30s: %v", screen, slices.Collect(maps.Values(r.inFlight)))
		r.mu.Unlock()
	}
	begin := time.Now()
	time.Sleep(d)
	got := r.since(begin)
	var polls int
	for _, u := range got {
		if strings.HasPrefix(u, "/api/v1/events?") && strings.Contains(u, "wait=50s") && strings.Contains(u, "after=") {
			polls++
			continue
		}
		b.t.Errorf("%s, idle for %s, asked %s: a screen should make no request of its own while nothing happens", screen, d, u)
	}
	if polls > 2 {
		b.t.Errorf("%s, idle for %s, made %d long polls: %q", screen, d, polls, got)
	}
	b.t.Logf("%s, idle for %s: %d requests, %q", screen, d, len(got), got)
}

// within waits to see xpath and fails when it took longer than max.
func (b *browser) within(max time.Duration, what, xpath string) {
	b.t.Helper()
	begin := time.Now()
	b.see(what, xpath)
	if took := time.Since(begin); took > max {
		b.t.Errorf("%s took %s, want at most %s", what, took.Round(time.Millisecond), max)
	} else {
		b.t.Logf("%s after %s", what, took.Round(time.Millisecond))
	}
}

type uiMachine struct {
	ID, Hostname, Status, StatusReason string `json:",omitempty"`
	Actions                            []string
}

func createMachine(t *testing.T, a api, hostname, mac string) uiMachine {
	t.Helper()
	var m uiMachine
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": hostname, "macs": []string{mac}}, &m); code != 201 {
		t.Fatalf("create machine %s: %d", hostname, code)
	}
	return m
}

// TestWebUIDashboard: the screen after sign-in counts the machines by
// state as the API lists them, each count leading to the list filtered
// by it; it shows the racks online, the machines that need attention
// with their reason, and the boot traffic of the last hour: a boot the
// rack serves (a real HTTP fetch of a machine's iPXE config from its
// boot server) is in the chart within seconds, without a reload, and so
// is a machine failed through the API under attention.
func TestWebUIDashboard(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "dash-rack")
	importTinyImage(t, a)
	createMachine(t, a, "d-ready1", "52:54:00:ee:30:01")
	createMachine(t, a, "d-ready2", "52:54:00:ee:30:02")
	broken := createMachine(t, a, "d-broken", "52:54:00:ee:30:03")
	if code := a.call("POST", "/api/v1/machines/"+broken.ID+"/mark-broken", nil, map[string]any{"reason": "PSU smells of smoke"}, nil); code != 200 {
		t.Fatalf("mark d-broken broken: %d", code)
	}
	later := createMachine(t, a, "d-later", "52:54:00:ee:30:04")

	b := newBrowser(t)
	defer b.checkClean()
	b.do("open the UI", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)))
	b.see("the dashboard", `//h1[normalize-space()="Dashboard"]`)
	b.see("the follower live", `//span[@id="live-status"][normalize-space()="live"]`)
	b.see("the rack online", `//p[@id="dash-racks-online"][@data-online="1"][@data-total="1"]`)

	// The counts are the API's.
	counts := func() map[string]int {
		var out struct{ Machines []uiMachine }
		a.call("GET", "/api/v1/machines?limit=1000", nil, nil, &out)
		n := map[string]int{}
		for _, m := range out.Machines {
			n[m.Status]++
		}
		return n
	}
	want := counts()
	if want["ready"] != 3 || want["broken"] != 1 {
		t.Fatalf("the API counts %v", want)
	}
	for _, s := range []string{"new", "commissioning", "ready", "deploying", "deployed", "releasing", "erasing", "failed", "broken", "rescue"} {
		b.see(s+"'s count", fmt.Sprintf(`//a[@id="state-%s"][@data-count="%d"][@href="#/machines?status=%s"]`, s, want[s], s))
	}
	b.see("the broken machine under attention, with its reason",
		`//div[@id="dash-attention"]//tr[@data-kind="machine"][td[1][contains(., "d-broken")]][td[2][normalize-space()="PSU smells of smoke"]]`)
	b.see("an empty chart", `//*[@id="boot-chart"][@data-total-bytes="0"][@data-buckets="60"]`)
	b.screenshot("dashboard")

	// A deployment fails behind the page's back: the machine is counted
	// and listed.
	if code := a.call("POST", "/api/v1/machines/"+later.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm"}, nil); code != 200 {
		t.Fatalf("deploy d-later: %d", code)
	}
	b.within(3*time.Second, "the deploying count", `//a[@id="state-deploying"][@data-count="1"]`)
	if code := a.call("POST", "/api/v1/machines/"+later.ID+"/mark-failed", nil, map[string]any{"reason": "installer hung"}, nil); code != 200 {
		t.Fatalf("mark d-later failed: %d", code)
	}
	b.within(3*time.Second, "the failed machine under attention",
		`//div[@id="dash-attention"]//tr[@data-kind="machine"][td[1][contains(., "d-later")]][td[2][normalize-space()="installer hung"]]`)
	b.see("the failed count", `//a[@id="state-failed"][@data-count="1"]`)
	b.see("the ready count", `//a[@id="state-ready"][@data-count="2"]`)

	// A machine boots: its iPXE config, fetched from the rack's HTTP
	// boot server, is a boot and a transfer in the chart. The chart's
	// figure of the current minute starts again at every turn of the
	// minute, so the boot is not made in its last ten seconds.
	if now := time.Now(); now.Second() >= 50 {
		time.Sleep(now.Truncate(time.Minute).Add(time.Minute + time.Second).Sub(now))
	}
	resp, err := http.Get(strings.TrimRight(rack.BootURL, "/") + "/ipxe/52-54-00-ee-30-01.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("GET the iPXE config: %s %q", resp.Status, body)
	}
	b.within(5*time.Second, "the boot and its bytes in the chart",
		fmt.Sprintf(`//*[@id="boot-chart"][@data-total-boots="1"][@data-total-bytes="%d"]`, len(body)))
	b.see("the current minute's figures", `//*[@id="boot-chart-last"][starts-with(normalize-space(), "since ")][contains(normalize-space(), ": 1 boot, ")]`)
	b.screenshot("dashboard-boot")

	// A count leads to the list it counts.
	b.do("open the failed machines", chromedp.Click(`//a[@id="state-failed"]`))
	b.see("d-later in the list", row("d-later")+`/td[3][normalize-space()="failed"]`)
	if n := value(b, "count the rows", chromedp.Evaluate[float64](`document.querySelectorAll('#view tbody tr').length`)); n != 1 {
		t.Errorf("the failed machines' list has %v rows, want 1", n)
	}
}

// TestWebUILiveUpdates: the machine list and a machine's page follow
// changes made elsewhere (through the API) within about two seconds, and
// while nothing happens neither asks the API anything but the event
// log's long poll. A machine's page offers exactly the actions the
// region allows, and names its deploy rack by name.
func TestWebUILiveUpdates(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "live-ui-rack")
	importTinyImage(t, a)
	lv1 := createMachine(t, a, "lv1", "52:54:00:ee:40:01")
	lv2 := createMachine(t, a, "lv2", "52:54:00:ee:40:02")

	b := newBrowser(t)
	defer b.checkClean()
	reqs := b.recordRequests()
	b.do("open the machines", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/machines"))
	b.see("lv1 ready", row("lv1")+`/td[3][normalize-space()="ready"]`)
	b.see("the follower live", `//span[@id="live-status"][normalize-space()="live"]`)
	b.idle(reqs, 10*time.Second, "the machine list")

	// Changes made outside the page.
	if code := a.call("POST", "/api/v1/machines/"+lv1.ID+"/mark-broken", nil, map[string]any{"reason": "fan"}, nil); code != 200 {
		t.Fatalf("mark lv1 broken: %d", code)
	}
	b.within(2500*time.Millisecond, "lv1 broken in the list", row("lv1")+`/td[3][normalize-space()="broken"]`)
	createMachine(t, a, "lv3", "52:54:00:ee:40:03")
	b.within(2500*time.Millisecond, "lv3 in the list", row("lv3")+`/td[3][normalize-space()="ready"]`)
	b.screenshot("machines-live")

	// A machine's page.
	b.do("open lv2", chromedp.Click(row("lv2")+`/td[1]/a`))
	b.see("lv2 ready", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	b.see("lv2's create event", `//td[normalize-space()="rackplane.region.machine_created.v1"]`)
	actionsFollow := func(status string) {
		t.Helper()
		var m uiMachine
		a.call("GET", "/api/v1/machines/"+lv2.ID, nil, nil, &m)
		if m.Status != status {
			t.Fatalf("lv2 is %s, want %s", m.Status, status)
		}
		shown := value(b, "read the offered actions", chromedp.Evaluate[[]string](`[...document.querySelectorAll('#deploy-form, #commission, #release, #mark-failed, #mark-broken, #mark-fixed')]
			.filter((e) => !e.hidden).map((e) => e.id === 'deploy-form' ? 'deploy' : e.id)`))
		var want []string
		for _, x := range m.Actions {
			if x != "delete" && x != "rescue" {
				want = append(want, x)
			}
		}
		slices.Sort(shown)
		slices.Sort(want)
		if !slices.Equal(shown, want) {
			t.Errorf("lv2 %s: the page offers %q, the region allows %q", status, shown, want)
		}
	}
	actionsFollow("ready")
	b.idle(reqs, 10*time.Second, "a machine's page")

	if code := a.call("POST", "/api/v1/machines/"+lv2.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm"}, nil); code != 200 {
		t.Fatalf("deploy lv2: %d", code)
	}
	b.within(2500*time.Millisecond, "lv2 deploying on its page", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="deploying"]`)
	b.see("the deploy rack by name, linked", `//dl[@id="machine-details"]/dd[@data-field="deploy rack"]/span/a[normalize-space()="live-ui-rack"][@href="#/racks/`+rack.ID+`"]`)
	b.see("lv2's deploying event, summed up", `//tr[td[normalize-space()="rackplane.region.machine_deploying.v1"]]/td[6]/details/summary[contains(., "bookworm")]`)
	actionsFollow("deploying")
	b.screenshot("machine-live")

	if code := a.call("POST", "/api/v1/machines/"+lv2.ID+"/mark-failed", nil, map[string]any{"reason": "no disk"}, nil); code != 200 {
		t.Fatalf("mark lv2 failed: %d", code)
	}
	b.within(2500*time.Millisecond, "lv2 failed, with its reason", `//dl[@id="machine-details"]/dd[@data-field="status reason"][normalize-space()="no disk"]`)
	actionsFollow("failed")
	if !value(b, "look at Power on", chromedp.Evaluate[bool](`document.getElementById("power-on").disabled && document.getElementById("power-on").title.includes("No power parameters")`)) {
		t.Errorf("Power on is offered to a machine without power parameters, or says not why")
	}
}

// TestWebUIEventsAppendLive: the event log's screen shows a new event
// from the page's follower, without reading the log again, with its key
// fields summed up and its JSON a click away.
func TestWebUIEventsAppendLive(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "events-rack")
	b := newBrowser(t)
	defer b.checkClean()
	reqs := b.recordRequests()
	b.do("open the events", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/events"))
	b.see("the rack's registration", `//td[normalize-space()="rackplane.rack.rack_registered.v1"]`)
	b.see("the follower live", `//span[@id="live-status"][normalize-space()="live"]`)
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	m := createMachine(t, a, "ev1", "52:54:00:ee:50:01")
	created := `//tr[td[normalize-space()="machine/` + m.ID + `"]][td[normalize-space()="rackplane.region.machine_created.v1"]]`
	b.within(2500*time.Millisecond, "ev1's creation", created)
	// The follower, having handed the event over, waits for the next:
	// that long poll is all the page asked.
	time.Sleep(300 * time.Millisecond)
	got := reqs.since(begin)
	if len(got) == 0 {
		t.Errorf("no request recorded after the event: the follower did not poll again, or the recording is broken")
	}
	for _, u := range got {
		if !strings.Contains(u, "wait=50s") {
			t.Errorf("the events screen asked %s: it should take new events from the follower", u)
		}
	}
	b.see("the summary", created+`/td[6]/details/summary[contains(., "hostname ev1")]`)
	b.do("open the JSON", chromedp.Click(created+`/td[6]/details/summary`))
	b.see("the JSON", created+`/td[6]/details/pre[contains(., '"hostname": "ev1"')]`)
	b.see("the subject links to the machine", created+`/td[3]/a[@href="#/machines/`+m.ID+`"]`)
	b.see("the rack's events by the rack's name", `//tr[td[normalize-space()="rackplane.rack.rack_registered.v1"]]/td[4][normalize-space()="rack events-rack"]/a[@href="#/racks/`+rack.ID+`"]`)
	b.screenshot("events-live")
}

// TestWebUIReconnects: while the region is away the header says
// reconnecting…, and once it is back the page follows the log again on
// its own, from where it was: a machine made then is in the list without
// a reload.
func TestWebUIReconnects(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	ns := natsserver.StartTest(t)
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	args := []string{"-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", regionAddr}
	region := start(t, "regiond", args...)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	eventually(t, 15*time.Second, "the region up", func() error {
		_, err := racks(context.Background(), a.base, a.token)
		return err
	})
	createMachine(t, a, "rc1", "52:54:00:ee:60:01")

	b := newBrowser(t)
	b.do("open the machines", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/machines"))
	b.see("rc1", row("rc1")+`/td[3][normalize-space()="ready"]`)
	b.see("the follower live", `//span[@id="live-status"][normalize-space()="live"]`)

	begin := time.Now()
	if err := region.Stop(); err != nil {
		t.Logf("stop regiond: %v", err)
	}
	// The long poll ends with the shutdown rather than holding it up.
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("regiond took %s to stop with the page's long poll open", took.Round(time.Millisecond))
	} else {
		t.Logf("regiond stopped in %s with the page's long poll open", took.Round(time.Millisecond))
	}
	b.see("reconnecting", `//span[@id="live-status"][normalize-space()="reconnecting…"]`)
	b.screenshot("reconnecting")

	start(t, "regiond", args...)
	eventually(t, 15*time.Second, "the region up again", func() error {
		_, err := racks(context.Background(), a.base, a.token)
		return err
	})
	b.see("live again", `//span[@id="live-status"][normalize-space()="live"]`)
	createMachine(t, a, "rc2", "52:54:00:ee:60:02")
	b.within(3*time.Second, "rc2 in the list", row("rc2")+`/td[3][normalize-space()="ready"]`)
}
