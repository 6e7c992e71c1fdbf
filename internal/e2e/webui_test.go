package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// chromiumPath finds the browser the UI test drives. It is a Debian
// package in .ci/packages; a machine without it fails the test, it does
// not skip it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("RACKPLANE_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is missing: the web UI test drives a headless browser. " +
		"Install it with `apt-get install chromium` (bash .ci/run does, from .ci/packages) " +
		"or set RACKPLANE_TEST_CHROMIUM to a Chrome or Chromium binary")
	return ""
}

// browser is a headless Chromium tab with what the page reported: script
// exceptions and the browser's own log (CSP violations land there).
type browser struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	bad []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}
	b.listen("start chromium")
	return b
}

// tab opens another tab of the same browser: its own session storage, so
// no token.
func (b *browser) tab() *browser {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	nb := &browser{t: b.t, ctx: ctx}
	nb.listen("open a tab")
	return nb
}

// listen opens the tab (starting the browser on first use) and records
// what it reports from then on.
func (b *browser) listen(what string) {
	b.t.Helper()
	err := chromedp.Listen(b.ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "script exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			// Error statuses of API calls are logged as network errors;
			// the page handles those. A CSP refusal is a security entry.
			if e.Entry.Source == log.EntrySourceSecurity || strings.Contains(e.Entry.Text, "Content Security Policy") {
				msg = "browser log: " + e.Entry.Text
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.bad = append(b.bad, msg)
			b.mu.Unlock()
		}
	})
	if err == nil {
		err = chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, log.Enable, cdp.Empty{})
			return err
		}))
	}
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// checkClean fails the test on any script exception or CSP violation.
func (b *browser) checkClean() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.bad {
		b.t.Errorf("the page reported: %s", m)
	}
}

// do runs actions, failing with what the page shows when they do not
// finish within 10s.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, b.text())
	}
}

// see waits until an element matching the XPath is visible.
func (b *browser) see(what, xpath string) {
	b.t.Helper()
	start := time.Now()
	b.do("waiting to see "+what, chromedp.WaitVisible(xpath))
	if d := time.Since(start); d > time.Second {
		b.t.Logf("saw %s after %s", what, d.Round(time.Millisecond))
	}
}

// text is what the page shows, for failure messages.
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(could not read the page: " + err.Error() + ")"
	}
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(could not read the page: " + err.Error() + ")"
	}
	return loc + "\n" + tail(s, 60)
}

// value runs an action that reads something, within 10s.
func value[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, b.text())
	}
	return v
}

func (b *browser) location() string {
	b.t.Helper()
	return value(b, "read the address", chromedp.Location())
}

// row is the XPath of a table row whose first cell reads first.
func row(first string) string {
	return fmt.Sprintf(`//tr[td[1][normalize-space()=%q]]`, first)
}

// importTinyImage gives the site's rack an OS to deploy: a kernel and an
// initrd of a few bytes, which no machine ever boots here.
func importTinyImage(t *testing.T, a api) {
	t.Helper()
	rs, err := racks(context.Background(), a.base, a.token)
	if err != nil || len(rs) != 1 {
		t.Fatalf("racks: %+v %v", rs, err)
	}
	src := bookwormSource(t, []byte("not really linux\n"), []byte("not really initrd.gz\n"))
	if code := a.call("POST", "/api/v1/racks/"+rs[0].ID+"/images/imports", nil, map[string]string{"dir": src}, nil); code != 202 {
		t.Fatalf("import: %d", code)
	}
	eventually(t, 15*time.Second, "the image in the OS registry", func() error {
		var reg struct {
			OSes []struct {
				Release   string
				Available bool
			}
		}
		a.call("GET", "/api/v1/os", nil, nil, &reg)
		if len(reg.OSes) != 1 || reg.OSes[0].Release != "bookworm" || !reg.OSes[0].Available {
			return fmt.Errorf("os registry %+v", reg)
		}
		return nil
	})
}

// TestWebUI drives the operator UI in headless Chromium against a real
// regiond and rackd: it signs in with a token from the URL fragment, sees
// the online rack and a machine made through the API, creates, releases
// and deploys machines through the page (each checked through the API),
// sees an API error verbatim, a machine's events, the event log following
// new events by itself, the audit log and the OS registry; a wrong token
// brings the sign-in form back with the API's message.
func TestWebUI(t *testing.T) {
	endToEnd(t)
	chromium := chromiumPath(t)
	ns := natsserver.StartTest(t)
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	start(t, "rackd", "-insecure-nats", "-nats-url", ns.URL, "-data-dir", filepath.Join(t.TempDir(), "rack"), "-name", "ui-rack",
		"-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false", "-heartbeat-interval", "500ms")
	eventually(t, 15*time.Second, "rack online", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		if r, ok := rackByName(rs, "ui-rack"); err != nil || !ok || !r.Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		return nil
	})
	took := time.Now()
	importTinyImage(t, a)
	t.Logf("the rack imported an image in %s", time.Since(took).Round(time.Millisecond))
	type machine struct {
		ID, Hostname, Status, OS, Release string
		MACs                              []string
	}
	var web1 machine
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "web1", "macs": []string{"52:54:00:ee:00:01"}}, &web1); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	byHostname := func(h string) []machine {
		var out struct{ Machines []machine }
		a.call("GET", "/api/v1/machines?hostname="+h, nil, nil, &out)
		return out.Machines
	}

	t.Logf("chromium: %s", chromium)
	b := newBrowser(t)
	defer b.checkClean()

	// Sign in from the fragment; the token leaves the address bar.
	b.do("open the UI", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)))
	b.see("the online rack by name", row("ui-rack")+`/td[2][normalize-space()="online"]`)
	if loc := b.location(); strings.Contains(loc, "token") || strings.Contains(loc, a.token) {
		t.Errorf("the token is still in the address bar: %s", loc)
	}

	// Machines: the one made through the API, with its status.
	b.do("go to Machines", chromedp.Click(chromedp.CSS(`a[data-view="machines"]`)))
	b.see("web1 ready", row("web1")+`/td[3][normalize-space()="ready"]`)
	b.see("web1's MAC", row("web1")+`/td[2][normalize-space()="52:54:00:ee:00:01"]`)

	// Create a machine in the page; the API has it.
	b.do("create web2 in the form",
		chromedp.SendKeys(chromedp.ID(`new-hostname`), "web2"),
		chromedp.SendKeys(chromedp.ID(`new-macs`), "52:54:00:EE:00:02"),
		chromedp.Click(chromedp.CSS(`#create-machine button[type="submit"]`)))
	b.see("web2 in the list", row("web2")+`/td[3][normalize-space()="ready"]`)
	if ms := byHostname("web2"); len(ms) != 1 || ms[0].Status != "ready" || len(ms[0].MACs) != 1 || ms[0].MACs[0] != "52:54:00:ee:00:02" {
		t.Fatalf("after creating web2 in the UI the API has %+v", ms)
	}

	// An API error reaches the operator as the API said it.
	b.do("create a machine with web1's MAC",
		chromedp.SendKeys(chromedp.ID(`new-hostname`), "web3"),
		chromedp.SendKeys(chromedp.ID(`new-macs`), "52:54:00:ee:00:01"),
		chromedp.Click(chromedp.CSS(`#create-machine button[type="submit"]`)))
	b.see("the API's conflict message", `//p[@id="error"][contains(., "MAC 52:54:00:ee:00:01 belongs to machine web1 (`+web1.ID+`)")][contains(., "conflict")]`)
	if ms := byHostname("web3"); len(ms) != 0 {
		t.Fatalf("web3 exists after a refused create: %+v", ms)
	}

	// A ready machine offers Deploy but no Release: the page offers what
	// the region's lifecycle allows.
	b.see("web1's Deploy link", row("web1")+`//a[contains(@class, "deploy-link")]`)
	if value(b, "count web1's Release buttons", chromedp.Evaluate[float64](`document.evaluate('count(`+row("web1")+
		`//button[contains(@class, "release")])', document, null, XPathResult.NUMBER_TYPE, null).numberValue`)) != 0 {
		t.Errorf("a ready machine's row offers Release")
	}

	// A transition the lifecycle refuses reaches the operator as the API
	// says it: web1 is marked broken behind the page's back, then the
	// page's own Mark broken is refused with the API's 409.
	b.do("open web1", chromedp.Click(row("web1")+`/td[1]/a`))
	b.see("web1's details", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	b.see("web1's create event", `//td[normalize-space()="rackplane.region.machine_created.v1"]`)
	if code := a.call("POST", "/api/v1/machines/"+web1.ID+"/mark-broken", nil, map[string]any{"reason": "fan"}, nil); code != 200 {
		t.Fatalf("mark web1 broken through the API: %d", code)
	}
	var refused struct {
		Error struct{ Code, Message string }
	}
	if code := a.call("POST", "/api/v1/machines/"+web1.ID+"/mark-broken", nil, nil, &refused); code != 409 ||
		!strings.Contains(refused.Error.Message, "machine web1 is broken") {
		t.Fatalf("mark a broken machine broken through the API: %d %+v", code, refused)
	}
	b.do("mark web1 broken in the page", chromedp.Click(chromedp.ID("mark-broken")))
	b.see("the API's refusal, verbatim", `//p[@id="error"][contains(., `+fmt.Sprintf("%q", refused.Error.Message)+`)][contains(., "conflict")]`)
	b.do("open web1 again", chromedp.Reload())
	b.see("web1 broken, with its reason", `//dl[@id="machine-details"]/dd[@data-field="status reason"][normalize-space()="fan"]`)
	b.do("mark web1 fixed in the page", chromedp.Click(chromedp.ID("mark-fixed")))
	b.see("web1 ready again", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	var got machine
	a.call("GET", "/api/v1/machines/"+web1.ID, nil, nil, &got)
	if got.Status != "ready" {
		t.Fatalf("after Mark fixed in the UI the API says web1 is %q", got.Status)
	}
	b.see("web1's broken event", `//td[normalize-space()="rackplane.region.machine_broken.v1"]`)

	// Deploy web2 with the OS the registry offers, then release it; the
	// API agrees each time.
	web2 := byHostname("web2")[0]
	b.do("open web2", chromedp.Navigate(a.base+"/#/machines/"+web2.ID))
	b.see("web2's details", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	// An option has no box of its own to be visible in; it only has to be there.
	b.do("waiting for the registry's OS in the deploy form",
		chromedp.Query(`//select[@id="deploy-os"]/option[contains(., "Debian 12 (debian/bookworm, amd64/generic)")]`))
	b.do("deploy web2",
		chromedp.SetValue(chromedp.ID("deploy-os"), "0"),
		chromedp.SendKeys(chromedp.ID("deploy-params"), "console=ttyS0"),
		chromedp.Click(chromedp.ID("deploy")))
	b.see("web2 deploying", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="deploying"]`)
	a.call("GET", "/api/v1/machines/"+web2.ID, nil, nil, &got)
	if got.Status != "deploying" || got.OS != "debian" || got.Release != "bookworm" {
		t.Fatalf("after Deploy in the UI the API says web2 is %+v", got)
	}
	if !value(b, "look for the deploy form", chromedp.Evaluate[bool](`document.getElementById("deploy-form").hidden`)) {
		t.Errorf("a deploying machine's page offers Deploy")
	}
	b.see("web2's deploying event", `//td[normalize-space()="rackplane.region.machine_deploying.v1"]`)
	b.do("release web2 from its page", chromedp.Click(chromedp.ID("release")))
	b.see("web2 released", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	a.call("GET", "/api/v1/machines/"+web2.ID, nil, nil, &got)
	if got.Status != "ready" {
		t.Fatalf("after Release on its page the API says web2 is %q", got.Status)
	}
	b.see("web2's release event", `//td[normalize-space()="rackplane.region.machine_released.v1"]`)

	// A deploying machine's row offers Release.
	if code := a.call("POST", "/api/v1/machines/"+web2.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm"}, nil); code != 200 {
		t.Fatalf("deploy web2 through the API: %d", code)
	}
	b.do("go to Machines", chromedp.Click(chromedp.CSS(`a[data-view="machines"]`)))
	b.see("web2 deploying", row("web2")+`/td[3][normalize-space()="deploying"]`)
	b.do("release web2 from its row", chromedp.Click(row("web2")+`//button[contains(@class, "release")]`))
	b.see("web2 ready", row("web2")+`/td[3][normalize-space()="ready"]`)
	a.call("GET", "/api/v1/machines/"+web2.ID, nil, nil, &got)
	if got.Status != "ready" {
		t.Fatalf("after Release in its row the API says web2 is %q", got.Status)
	}

	// The event log follows new events by polling.
	b.do("go to Events", chromedp.Click(chromedp.CSS(`a[data-view="events"]`)))
	b.see("the rack's registration", `//td[normalize-space()="rackplane.rack.rack_registered.v1"]`)
	var web4 machine
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "web4", "macs": []string{"52:54:00:ee:00:04"}}, &web4); code != 201 {
		t.Fatalf("create web4: %d", code)
	}
	b.see("web4's creation, without reloading", `//tr[td[normalize-space()="machine/`+web4.ID+`"]][td[normalize-space()="rackplane.region.machine_created.v1"]]`)

	// The audit log has what was done in the page, by the token's actor.
	b.do("go to Audit log", chromedp.Click(chromedp.CSS(`a[data-view="audit"]`)))
	b.see("the release in the audit log", `//tr[td[normalize-space()="machine/`+web2.ID+`"]][td[normalize-space()="POST /api/v1/machines/{id}/release"]][td[2][normalize-space()="e2e"]]`)
	b.see("the refused mark-broken in the audit log", `//tr[td[normalize-space()="machine/`+web1.ID+`"]][td[normalize-space()="POST /api/v1/machines/{id}/mark-broken"]][td[5][starts-with(normalize-space(), "failure 409")]]`)
	b.see("the deploy in the audit log", `//tr[td[normalize-space()="machine/`+web2.ID+`"]][td[normalize-space()="POST /api/v1/machines/{id}/deploy"]][td[2][normalize-space()="e2e"]]`)

	b.do("go to OS registry", chromedp.Click(chromedp.CSS(`a[data-view="os"]`)))
	b.see("the rack that can boot Debian", `//tr[td[2][contains(., "bookworm")]]/td[6][contains(., "ui-rack")][contains(., "stable/20261123")]`)

	// A wrong token: the sign-in form with the API's message. Then the
	// form signs in with the right one.
	bad := b.tab()
	defer bad.checkClean()
	bad.do("open the UI with a wrong token", chromedp.Navigate(a.base+"/#token=rp_wrong"))
	bad.see("the 401 message", `//p[@id="login-message"][contains(., "invalid or revoked token")]`)
	if value(bad, "look for the views", chromedp.Evaluate[bool](`!document.getElementById("view").hidden`)) {
		t.Errorf("a view is shown with a wrong token")
	}
	if loc := bad.location(); strings.Contains(loc, "rp_wrong") {
		t.Errorf("the wrong token is still in the address bar: %s", loc)
	}
	bad.do("sign in with the form",
		chromedp.SendKeys(chromedp.ID(`login-token`), a.token),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	bad.see("the rack after signing in", row("ui-rack")+`/td[2][normalize-space()="online"]`)
}
