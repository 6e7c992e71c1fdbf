package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
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

// screenshot checks the screen and keeps a picture of the whole page as <name>.png in the
// directory RACKPLANE_UI_SCREENSHOTS names, for a person to look at what
// the tests drove; without it, nothing is taken.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	// Each screen a test looks at is checked for what a script's slip
	// writes: a missing value shown as null, undefined or NaN.
	shown := value(b, "read the page", chromedp.Evaluate[string](`document.body.innerText`))
	if m := slipped.FindString(shown); m != "" {
		b.t.Errorf("%s shows %q:\n%s", name, m, tail(shown, 40))
	}
	dir := os.Getenv("RACKPLANE_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := value(b, "take a screenshot of "+name, chromedp.FullScreenshot(100))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// slipped matches what a page shows when a script put a missing value
// in the DOM as text.
var slipped = regexp.MustCompile(`\b(null|undefined|NaN)\b|\[object Object\]`)

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

	// Sign in from the fragment, to the dashboard; the token leaves the
	// address bar.
	b.do("open the UI", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)))
	b.see("the dashboard's racks", `//p[@id="dash-racks-online"][@data-online="1"][@data-total="1"]`)
	b.do("go to Racks", chromedp.Click(chromedp.CSS(`a[data-view="racks"]`)))
	b.see("the online rack by name", row("ui-rack")+`/td[2][normalize-space()="online"]`)
	b.screenshot("racks")
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
	b.screenshot("machines")
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
	// says it: web1 is marked broken behind the page's back, and the
	// page's own Mark broken, pressed before the page has heard of it, is
	// refused with the API's 409. The page follows the machine, so it
	// hides Mark broken a moment later: the button is pressed in the
	// same turn of the page's script as the other change is answered,
	// which a click on its place on the screen would race.
	b.do("open web1", chromedp.Click(row("web1")+`/td[1]/a`))
	b.see("web1's details", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	b.see("web1's create event", `//td[normalize-space()="rackplane.region.machine_created.v1"]`)
	b.see("web1's Mark broken", `//button[@id="mark-broken"][not(@hidden)]`)
	status := value(b, "mark web1 broken through the API, then in the page", chromedp.Evaluate[float64](fmt.Sprintf(`fetch('/api/v1/machines/%s/mark-broken', {
			method: 'POST', headers: {'Authorization': 'Bearer ' + %q, 'Content-Type': 'application/json'}, body: '{"reason": "fan"}'})
		.then((r) => { document.getElementById('mark-broken').click(); return r.status; })`, web1.ID, a.token), chromedp.EvalAwaitPromise))
	if status != 200 {
		t.Fatalf("mark web1 broken through the API: %v", status)
	}
	var refused struct {
		Error struct{ Code, Message string }
	}
	if code := a.call("POST", "/api/v1/machines/"+web1.ID+"/mark-broken", nil, nil, &refused); code != 409 ||
		!strings.Contains(refused.Error.Message, "machine web1 is broken") {
		t.Fatalf("mark a broken machine broken through the API: %d %+v", code, refused)
	}
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
	b.screenshot("machine")

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

	// The event log follows new events as the page's follower hands them over.
	b.do("go to Events", chromedp.Click(chromedp.CSS(`a[data-view="events"]`)))
	b.see("the rack's registration", `//td[normalize-space()="rackplane.rack.rack_registered.v1"]`)
	var web4 machine
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "web4", "macs": []string{"52:54:00:ee:00:04"}}, &web4); code != 201 {
		t.Fatalf("create web4: %d", code)
	}
	b.see("web4's creation, without reloading", `//tr[td[normalize-space()="machine/`+web4.ID+`"]][td[normalize-space()="rackplane.region.machine_created.v1"]]`)
	b.screenshot("events")

	// The audit log has what was done in the page, by the token's actor.
	b.do("go to Audit log", chromedp.Click(chromedp.CSS(`a[data-view="audit"]`)))
	b.see("the release in the audit log", `//tr[td[normalize-space()="machine/`+web2.ID+`"]][td[normalize-space()="POST /api/v1/machines/{id}/release"]][td[2][normalize-space()="e2e"]]`)
	b.see("the refused mark-broken in the audit log", `//tr[td[normalize-space()="machine/`+web1.ID+`"]][td[normalize-space()="POST /api/v1/machines/{id}/mark-broken"]][td[5][starts-with(normalize-space(), "failure 409")]]`)
	b.see("the deploy in the audit log", `//tr[td[normalize-space()="machine/`+web2.ID+`"]][td[normalize-space()="POST /api/v1/machines/{id}/deploy"]][td[2][normalize-space()="e2e"]]`)
	b.screenshot("audit")

	b.do("go to OS registry", chromedp.Click(chromedp.CSS(`a[data-view="os"]`)))
	b.see("the rack that can boot Debian", `//tr[td[2][contains(., "bookworm")]]/td[6][contains(., "ui-rack")][contains(., "stable/20261123")]`)
	b.screenshot("os")

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
	bad.see("the dashboard after signing in", `//p[@id="dash-racks-online"][@data-online="1"]`)
}

// uiSite starts a NATS server, a regiond without its NATS callout and a
// rackd named rackName with rackArgs, and returns the API, the rack once
// online, and the NATS server (open to any client, so a test can publish
// as the rack).
func uiSite(t *testing.T, rackName string, rackArgs ...string) (api, rackplane.Rack, *natsserver.Test) {
	t.Helper()
	ns := natsserver.StartTest(t)
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	start(t, "rackd", append([]string{"-insecure-nats", "-nats-url", ns.URL, "-data-dir", filepath.Join(t.TempDir(), "rack"), "-name", rackName,
		"-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false", "-heartbeat-interval", "500ms"},
		rackArgs...)...)
	var rack rackplane.Rack
	eventually(t, 15*time.Second, "rack online", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		r, ok := rackByName(rs, rackName)
		if err != nil || !ok || !r.Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		rack = r
		return nil
	})
	return a, rack, ns
}

// writePowerDrivers writes the power script drivers of TestWebUIPower into
// a new search path: uibmc, whose BMC is the file named by POWER_ADDRESS
// (on or off) that takes only the password in the file beside it
// (.password), sleeping POWER_EXTRA_DELAY seconds first; and halfbmc,
// which has no power-status and so is unusable.
func writePowerDrivers(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	check := `#!/bin/sh
set -eu
if [ "$POWER_PASSWORD" != "$(cat "$POWER_ADDRESS.password")" ]; then
	echo "BMC $POWER_ADDRESS refused user $POWER_USER" >&2
	exit 3
fi
sleep "${POWER_EXTRA_DELAY:-0}"
# The test holds an action while it looks at the page (at most 8s).
i=0
while [ -e "$POWER_ADDRESS.hold" ] && [ $i -lt 160 ]; do sleep 0.05; i=$((i+1)); done
`
	scripts := map[string]string{
		"uibmc/power-on":     check + "echo on > \"$POWER_ADDRESS\"\n",
		"uibmc/power-off":    check + "echo off > \"$POWER_ADDRESS\"\n",
		"uibmc/power-status": check + "cat \"$POWER_ADDRESS\"\n",
		"halfbmc/power-on":   "#!/bin/sh\nexit 0\n",
		"halfbmc/power-off":  "#!/bin/sh\nexit 0\n",
	}
	for name, text := range scripts {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestWebUIPower drives a machine's power through the operator UI against
// a real regiond and a rackd with a shell power driver: the unusable
// driver is offered disabled with why; power parameters set in the form
// with a wrong password, Power on refused with the API's message, which
// the machines list shows too; the right password, Power on (the buttons
// disabled while it runs) and the BMC's file says on; Power off cancelled,
// then confirmed, and the file says off; Check now asks the rack. The
// password never shows in the page, in its text or in its inputs.
func TestWebUIPower(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "power-rack", "-power-search-path", writePowerDrivers(t), "-power-timeout", "10s")
	eventually(t, 15*time.Second, "the rack reports uibmc", func() error {
		var ds struct {
			PowerDrivers []struct {
				Name      string
				Available bool
			} `json:"power_drivers"`
		}
		a.call("GET", "/api/v1/power-drivers", nil, nil, &ds)
		for _, d := range ds.PowerDrivers {
			if d.Name == "uibmc" && d.Available {
				return nil
			}
		}
		return fmt.Errorf("power drivers %+v", ds)
	})
	var pw1 struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "pw1", "macs": []string{"52:54:00:ee:10:01"}}, &pw1); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	type machinePower struct {
		PowerState   string `json:"power_state"`
		PowerOutcome string `json:"power_outcome"`
		PowerError   string `json:"power_error"`
	}
	stored := func(want func(machinePower) bool) {
		t.Helper()
		eventually(t, 10*time.Second, "the machine's stored power state", func() error {
			var m machinePower
			a.call("GET", "/api/v1/machines/"+pw1.ID, nil, nil, &m)
			if !want(m) {
				return fmt.Errorf("machine %+v", m)
			}
			return nil
		})
	}
	bmc := filepath.Join(t.TempDir(), "bmc")
	const secret, wrong = "Ui-Secret-4821", "Wrong-Guess-1177"
	for name, content := range map[string]string{bmc: "off\n", bmc + ".password": secret} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bmcSays := func(want string) {
		t.Helper()
		b, err := os.ReadFile(bmc)
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Fatalf("the BMC's file says %q (%v), want %s", b, err, want)
		}
	}

	b := newBrowser(t)
	defer b.checkClean()
	// noPassword fails when a password is in the page: its markup and
	// text, or any input's value.
	noPassword := func(when string) {
		t.Helper()
		page := value(b, "read the page", chromedp.Evaluate[string](
			`document.documentElement.outerHTML + "\n" + document.body.innerText + "\n" + `+
				`Array.from(document.querySelectorAll("input, textarea, select")).map((e) => e.value).join("\n")`))
		for _, pw := range []string{secret, wrong} {
			if strings.Contains(page, pw) {
				t.Errorf("%s: the page holds the password %q", when, pw)
			}
		}
	}
	powerField := func(field string) string {
		return `//dl[@id="power-details"]/dd[@data-field="` + field + `"]`
	}

	b.do("open the machines", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/machines"))
	b.see("pw1 never checked", row("pw1")+`/td[4][normalize-space()="—"]`)
	b.do("open pw1", chromedp.Click(row("pw1")+`/td[1]/a`))
	b.see("no power parameters yet", `//p[@id="power-none"]`)
	if !value(b, "look at Power on", chromedp.Evaluate[bool](`document.getElementById("power-on").disabled`)) {
		t.Errorf("Power on is offered for a machine without power parameters")
	}
	// The drivers the rack reports: an unusable one is there, disabled,
	// with why.
	b.do("waiting for uibmc in the driver list",
		chromedp.Query(`//select[@id="power-driver"]/option[@value="uibmc"][not(@disabled)][contains(., "power-rack")]`))
	b.do("waiting for halfbmc, disabled with why",
		chromedp.Query(`//select[@id="power-driver"]/option[@value="halfbmc"][@disabled][contains(., "power-status is missing")]`))
	b.do("waiting for the rack in the rack list",
		chromedp.Query(`//select[@id="power-rack"]/option[@value="`+rack.ID+`"][normalize-space()="power-rack"]`))

	// Parameters with a wrong password: saved, and Power on is refused
	// with the API's message.
	b.do("set the power parameters with a wrong password",
		chromedp.SetValue(chromedp.ID("power-driver"), "uibmc"),
		chromedp.SetValue(chromedp.ID("power-rack"), rack.ID),
		chromedp.SendKeys(chromedp.ID("power-address"), bmc),
		chromedp.SendKeys(chromedp.ID("power-username"), "admin"),
		chromedp.SendKeys(chromedp.ID("power-password"), wrong),
		chromedp.SendKeys(chromedp.ID("power-extra"), "delay=1"),
		chromedp.Click(chromedp.ID("power-save")))
	b.see("the saved parameters", powerField("driver")+`[normalize-space()="uibmc"]`)
	b.see("a password is set", powerField("password")+`[starts-with(normalize-space(), "set (fingerprint ")]`)
	b.see("the driving rack by name", powerField("driving rack")+`[normalize-space()="power-rack (named in the power parameters (rack_id))"]`)
	// The region polls a machine whose power was never checked first: the
	// page shows never, or already the time of that poll.
	b.see("when last checked", powerField("checked")+`[normalize-space()="never" or contains(., ":")]`)
	noPassword("after saving a wrong password")
	b.do("power on with the wrong password", chromedp.Click(chromedp.ID("power-on")))
	b.see("the API's refusal", `//p[@id="power-message"][contains(., "refused user admin")][contains(., "HTTP 409")]`)
	bmcSays("off")
	stored(func(m machinePower) bool { return m.PowerOutcome != "" && m.PowerOutcome != "ok" && m.PowerError != "" })
	b.do("go to Machines", chromedp.Click(chromedp.CSS(`a[data-view="machines"]`)))
	b.see("the failure in the list", row("pw1")+`/td[4][contains(@title, "refused user admin")]//div[contains(@class, "power-error")][starts-with(., "auth_failed: power driver uibmc")]`)
	b.do("open pw1 again", chromedp.Click(row("pw1")+`/td[1]/a`))
	b.see("the last error", powerField("last error")+`[contains(., "refused user admin")]`)

	// The right password, then Power on: every power button is disabled
	// while it runs (the BMC takes a second).
	b.do("set the right password",
		chromedp.SendKeys(chromedp.ID("power-password"), secret),
		chromedp.Click(chromedp.ID("power-save")))
	b.see("saved", `//span[@id="power-saved"][normalize-space()="Saved."]`)
	noPassword("after saving the password")
	if v := value(b, "read the password field", chromedp.Value(chromedp.ID("power-password"))); v != "" {
		t.Errorf("the password field holds %d characters after saving", len(v))
	}
	// "Saved." shows while the panel reloads the parameters, with its
	// buttons disabled until that ends.
	b.see("Power on offered", `//button[@id="power-on"][not(@disabled)]`)
	// The BMC holds Power on until the test has looked: however slow the
	// machine, the buttons are seen while the action runs.
	if err := os.WriteFile(bmc+".hold", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b.do("power on", chromedp.Click(chromedp.ID("power-on")))
	if !value(b, "look at the buttons while Power on runs", chromedp.Evaluate[bool](
		`["power-on", "power-off", "power-cycle", "power-check"].every((id) => document.getElementById(id).disabled)`)) {
		t.Errorf("the power buttons are not disabled while Power on runs")
	}
	if err := os.Remove(bmc + ".hold"); err != nil {
		t.Fatal(err)
	}
	b.see("on", powerField("power")+`[normalize-space()="on"]`)
	b.see("the result", `//span[@id="power-result"][starts-with(normalize-space(), "Power on: on (ok, ")][contains(., "rack power-rack")]`)
	b.screenshot("power")
	b.see("no error", powerField("last error")+`[normalize-space()=""]`)
	if !value(b, "look at the error", chromedp.Evaluate[bool](`document.getElementById("power-message").hidden`)) {
		t.Errorf("the earlier error still shows after Power on succeeded")
	}
	bmcSays("on")

	// Power off asks first: cancelled, nothing happens; confirmed, off.
	b.do("power off, then cancel", chromedp.Click(chromedp.ID("power-off")))
	b.see("the confirmation", `//div[@id="power-confirm"][contains(., "Power off pw1 now?")]`)
	if !value(b, "look at Power on while asked", chromedp.Evaluate[bool](`document.getElementById("power-on").disabled`)) {
		t.Errorf("Power on is offered while Power off waits for its confirmation")
	}
	b.do("cancel", chromedp.Click(chromedp.ID("power-confirm-no")))
	b.see("cancelled", `//span[@id="power-result"][normalize-space()="Cancelled."]`)
	bmcSays("on")
	b.do("power off, then confirm", chromedp.Click(chromedp.ID("power-off")))
	b.see("the confirmation", `//div[@id="power-confirm"][contains(., "Power off pw1 now?")]`)
	b.do("confirm", chromedp.Click(chromedp.ID("power-confirm-yes")))
	b.see("off", powerField("power")+`[normalize-space()="off"]`)
	bmcSays("off")
	noPassword("after powering off")

	// Check now asks the rack: the BMC switched on behind the region's back.
	if err := os.WriteFile(bmc, []byte("on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.do("check now", chromedp.Click(chromedp.ID("power-check")))
	b.see("on, from the rack", powerField("power")+`[normalize-space()="on"]`)
	b.see("the rack's answer", `//span[@id="power-result"][starts-with(normalize-space(), "The rack says: on")]`)
	if checked := value(b, "read when it was checked", chromedp.Text(powerField("checked"))); checked == "never" || checked == "" {
		t.Errorf("checked %q after Check now", checked)
	}

	// The list shows the stored state, and a reload the saved parameters
	// with an empty password field.
	stored(func(m machinePower) bool { return m.PowerState == "on" && m.PowerOutcome == "ok" })
	b.do("go to Machines", chromedp.Click(chromedp.CSS(`a[data-view="machines"]`)))
	b.see("pw1 on in the list", row("pw1")+`/td[4][normalize-space()="on"]`)
	b.do("open pw1 again", chromedp.Click(row("pw1")+`/td[1]/a`))
	b.see("the saved address", powerField("address")+`[normalize-space()=`+fmt.Sprintf("%q", bmc)+`]`)
	if v := value(b, "read the form's address", chromedp.Value(chromedp.ID("power-address"))); v != bmc {
		t.Errorf("the form's address is %q, want %q", v, bmc)
	}
	noPassword("after a reload")

	var audit struct {
		Entries []json.RawMessage
	}
	a.call("GET", "/api/v1/audit?last=100", nil, nil, &audit)
	for _, e := range audit.Entries {
		if strings.Contains(string(e), secret) || strings.Contains(string(e), wrong) {
			t.Errorf("the audit log holds a password: %s", e)
		}
	}
}

// TestWebUIHardware drives a machine's hardware and tags through the
// operator UI against a real regiond and rackd, the rack's events
// published on its NATS subjects as its agents' reports come: a machine
// never commissioned says so; Commission shows the agent's steps with
// their progress as they come, then the inventory (cores, memory, disk
// serials, MACs, the boot NIC) once the agent finished, without a
// reload; a second inventory shows what changed. Tags are set in the
// form (a bad one refused with the API's message), show as chips in the
// list, and the tag and hardware filters narrow the list, from the
// address too.
func TestWebUIHardware(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, ns := uiSite(t, "hw-rack")
	// An ephemeral environment of a few bytes, so that the region lets
	// the machine commission; no machine boots it here.
	src := imageSource(t, "rackplane", "ephemeral", []byte("not really linux\n"), []byte("not really initrd.gz\n"))
	if code := a.call("POST", "/api/v1/racks/"+rack.ID+"/images/imports", nil, map[string]string{"dir": src}, nil); code != 202 {
		t.Fatalf("import: %d", code)
	}
	eventually(t, 15*time.Second, "the ephemeral environment in the OS registry", func() error {
		var reg struct {
			OSes []struct {
				OS, Release string
				Available   bool
			}
		}
		a.call("GET", "/api/v1/os", nil, nil, &reg)
		for _, o := range reg.OSes {
			if o.OS == "rackplane" && o.Release == "ephemeral" && o.Available {
				return nil
			}
		}
		return fmt.Errorf("os registry %+v", reg)
	})
	type machine struct {
		ID, Hostname, Status string
		DeploymentID         string `json:"deployment_id"`
		Tags                 []string
	}
	var hw1, hw2 machine
	for _, m := range []struct {
		out       *machine
		name, mac string
	}{{&hw1, "hw1", "52:54:00:ee:20:01"}, {&hw2, "hw2", "52:54:00:ee:20:02"}} {
		if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": m.name, "macs": []string{m.mac}}, m.out); code != 201 {
			t.Fatalf("create %s: %d", m.name, code)
		}
	}

	// The rack's side: its events on its own subjects, as rackd
	// publishes what its agents report.
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	publish := func(typ string, data any) {
		t.Helper()
		ev, err := events.New(events.RackSource(rack.ID), typ, events.MachineStreamName(hw1.ID), time.Now(), data)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(context.Background(), events.RackEventSubject(rack.ID, typ), raw); err != nil {
			t.Fatalf("publish %s: %v", typ, err)
		}
	}
	secure := true
	inv := events.Inventory{
		CollectedAt: time.Now().UTC().Truncate(time.Millisecond), AgentVersion: "0.1.0", Architecture: "amd64",
		CPU:    events.InventoryCPU{Model: "UI Test CPU 9000", Sockets: 2, Cores: 16, Threads: 32, Flags: []string{"lm", "vmx"}},
		Memory: events.InventoryMemory{TotalBytes: 64<<30 - 300<<20, InstalledBytes: 64 << 30, InstalledSource: events.MemorySMBIOS},
		Disks: []events.InventoryDisk{
			{Name: "sda", SizeBytes: 960 << 30, Model: "UI SSD", Serial: "UISN-DISK-0001", ByID: []string{"/dev/disk/by-id/ata-UI_SSD_UISN-DISK-0001"}},
			{Name: "sdb", SizeBytes: 4000 << 30, Model: "UI HDD", Serial: "UISN-DISK-0002", Rotational: true},
		},
		NICs: []events.InventoryNIC{
			{Name: "eno1", MAC: "52:54:00:ee:20:01", Driver: "e1000", Link: events.LinkUp, SpeedMbps: 1000, Boot: true},
			{Name: "eno2", MAC: "52:54:00:ee:20:11", Driver: "e1000", Link: events.LinkDown},
		},
		Firmware: events.InventoryFirmware{Type: events.FirmwareUEFI, SecureBoot: &secure},
		DMI:      events.InventoryDMI{Vendor: "UI Vendor", Product: "UI Server 1U", Serial: "UI-CHASSIS-77"},
	}

	b := newBrowser(t)
	defer b.checkClean()
	hwField := func(field string) string { return `//dl[@id="hardware-summary"]/dd[@data-field="` + field + `"]` }

	b.do("open hw1", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/machines/"+hw1.ID))
	b.see("not commissioned yet", `//p[@id="hardware-none"][contains(., "Not commissioned yet")]`)
	b.do("commission hw1", chromedp.Click(chromedp.ID("commission")))
	b.see("hw1 commissioning", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="commissioning"]`)
	b.see("waiting for the agent", `//div[@id="commissioning"]//p[contains(., "no step yet")]`)
	var got machine
	a.call("GET", "/api/v1/machines/"+hw1.ID, nil, nil, &got)
	if got.Status != "commissioning" || got.DeploymentID == "" {
		t.Fatalf("after Commission in the UI the API says hw1 is %+v", got)
	}
	step := func(name, state string, progress int, message string) {
		t.Helper()
		publish(events.TypeAgentStepReported, events.AgentStepReported{MachineID: hw1.ID, OperationID: got.DeploymentID,
			Purpose: events.BootPurposeCommission, Name: name, State: state, Progress: progress, Message: message})
	}
	step("network", events.AgentStepStarted, 0, "")
	step("network", events.AgentStepDone, 100, "eno1 up")
	step("inventory", events.AgentStepStarted, 40, "reading disks")
	stepRow := func(name string) string { return `//div[@id="commissioning"]//tr[@data-step="` + name + `"]` }
	b.see("the network step done", stepRow("network")+`[td[2][normalize-space()="done"]][td[4][normalize-space()="eno1 up"]]`)
	b.see("the inventory step at 40%", stepRow("inventory")+`[td[2][normalize-space()="started"]][td[4][normalize-space()="reading disks"]]`+
		`/td[3][normalize-space()="40%"]/progress[@value="40"]`)
	step("inventory", events.AgentStepDone, 100, "")
	b.see("the inventory step done", stepRow("inventory")+`[td[2][normalize-space()="done"]]/td[3]/progress[@value="100"]`)

	// The inventory, then the agent's last word: the machine is ready and
	// its page shows the hardware without a reload.
	publish(events.TypeInventoryReported, events.InventoryReported{MachineID: hw1.ID, OperationID: got.DeploymentID, Inventory: inv})
	publish(events.TypeAgentFinished, events.AgentFinished{MachineID: hw1.ID, OperationID: got.DeploymentID,
		Purpose: events.BootPurposeCommission, Success: true, Message: "commissioned"})
	b.see("hw1 ready", `//dl[@id="machine-details"]/dd[@data-field="status"][normalize-space()="ready"]`)
	b.see("the cores", hwField("sockets × cores × threads")+`[normalize-space()="2 × 16 × 32"]`)
	b.see("the memory", hwField("memory")+`[starts-with(normalize-space(), "64 GiB installed")]`)
	b.see("the CPU", hwField("cpu")+`[normalize-space()="UI Test CPU 9000"]`)
	b.see("the firmware", hwField("firmware")+`[normalize-space()="UEFI, Secure Boot on"]`)
	b.see("the DMI serial", hwField("serial")+`[normalize-space()="UI-CHASSIS-77"]`)
	b.see("the disks' total", hwField("disks")+`[normalize-space()="2 disks, 4.8 TiB in all"]`)
	b.see("sda's serial", `//div[@id="hardware-disks"]//tr[td[1][normalize-space()="sda"]]/td[4][normalize-space()="UISN-DISK-0001"]`)
	b.see("sdb's serial", `//div[@id="hardware-disks"]//tr[td[1][normalize-space()="sdb"]]/td[4][normalize-space()="UISN-DISK-0002"]`)
	b.see("the boot NIC marked", `//div[@id="hardware-nics"]//tr[@data-nic="eno1"][contains(@class, "boot")]`+
		`[td[1]/span[normalize-space()="boot"]]/td[2][normalize-space()="52:54:00:ee:20:01"]`)
	b.see("the other NIC", `//div[@id="hardware-nics"]//tr[@data-nic="eno2"][not(contains(@class, "boot"))]/td[2][normalize-space()="52:54:00:ee:20:11"]`)
	if !value(b, "look at the commissioning steps", chromedp.Evaluate[bool](`document.getElementById("commissioning").hidden`)) {
		t.Errorf("a ready machine's page shows commissioning steps")
	}
	if value(b, "look for changes", chromedp.Evaluate[bool](`document.getElementById("hardware-changes") !== null`)) {
		t.Errorf("a first inventory shows changes")
	}

	// Tags in the form: a bad one is refused as the API says, then two
	// are set.
	b.do("set a bad tag",
		chromedp.SendKeys(chromedp.ID("tags-input"), "Bad!Tag"),
		chromedp.Click(chromedp.ID("tags-save")))
	b.see("the API's refusal", `//p[@id="error"][contains(., '"Bad!Tag": want lower-case letters')][contains(., "HTTP 400")]`)
	// The refused input stays for the operator to correct: empty it.
	value(b, "empty the tags input", chromedp.Evaluate[string](`document.getElementById("tags-input").value = ""`))
	b.do("set two tags",
		chromedp.SendKeys(chromedp.ID("tags-input"), "gpu, rack-a1"),
		chromedp.Click(chromedp.ID("tags-save")))
	b.see("saved", `//span[@id="tags-saved"][normalize-space()="Saved."]`)
	b.see("the tags as chips", `//div[@id="machine-tags"][.//span[@data-tag="gpu"]][.//span[@data-tag="rack-a1"]]`)
	a.call("GET", "/api/v1/machines/"+hw1.ID, nil, nil, &got)
	if strings.Join(got.Tags, " ") != "gpu rack-a1" {
		t.Fatalf("after setting tags in the UI the API has %q", got.Tags)
	}

	// A second commissioning found another disk: the page says what changed.
	inv2 := inv
	inv2.CollectedAt = inv.CollectedAt.Add(time.Minute)
	inv2.Disks = append(slices.Clone(inv.Disks), events.InventoryDisk{Name: "sdc", SizeBytes: 480 << 30, Serial: "UISN-DISK-0003"})
	publish(events.TypeInventoryReported, events.InventoryReported{MachineID: hw1.ID, OperationID: got.DeploymentID, Inventory: inv2})
	b.see("the new disk", `//div[@id="hardware-disks"]//tr[td[1][normalize-space()="sdc"]]/td[4][normalize-space()="UISN-DISK-0003"]`)
	b.do("open the changes", chromedp.Click(`//details[@id="hardware-changes"]/summary`))
	b.see("the disk added", `//details[@id="hardware-changes"]//li[normalize-space()="Disk added: sdc 480 GiB (serial UISN-DISK-0003)"]`)
	b.screenshot("hardware")

	// The list: chips, and the filters narrow it, from the address too.
	b.do("go to Machines", chromedp.Click(chromedp.CSS(`a[data-view="machines"]`)))
	b.see("hw1's tags", row("hw1")+`/td[6][span/span[@data-tag="gpu"]][span/span[@data-tag="rack-a1"]]`)
	b.see("hw1's hardware", row("hw1")+`/td[7][starts-with(normalize-space(), "16 cores, 64 GiB, 3 disks")]`)
	b.see("hw2 without tags", row("hw2")+`/td[6][not(.//span[@data-tag])]`)
	b.do("filter by tag gpu", chromedp.SendKeys(chromedp.ID("filter-tag"), "gpu"), chromedp.Click(chromedp.ID("filter-apply")))
	if loc := b.location(); !strings.HasSuffix(loc, "#/machines?tag=gpu") {
		t.Errorf("after filtering by tag the address is %s", loc)
	}
	listed := func() string {
		return value(b, "read the list", chromedp.Evaluate[string](
			`Array.from(document.querySelectorAll("tr[data-machine-id] td:first-child")).map((e) => e.textContent).join(" ")`))
	}
	b.see("only hw1", `//table[not(.//tr[td[1][normalize-space()="hw2"]])]`+`//tr[td[1][normalize-space()="hw1"]]`)
	if l := listed(); l != "hw1" {
		t.Errorf("tag gpu lists %q, want hw1", l)
	}
	b.do("open a filter from the address", chromedp.Navigate(a.base+"/#/machines?min_cores=16&min_memory=64&arch=amd64"))
	b.see("the filters from the address", `//input[@id="filter-min-cores"][@value="16"]`)
	b.see("hw1 has 16 cores and 64 GiB", row("hw1"))
	if l := listed(); l != "hw1" {
		t.Errorf("min 16 cores and 64 GiB lists %q, want hw1", l)
	}
	b.do("ask for more cores", chromedp.SetValue(chromedp.ID("filter-min-cores"), "17"), chromedp.Click(chromedp.ID("filter-apply")))
	b.see("no machine matches", `//p[contains(., "No machine matches arch amd64, at least 17 cores, at least 64 GiB of memory.")]`)
	b.do("clear the filters", chromedp.Click(chromedp.ID("filter-clear")))
	b.see("hw2 again", row("hw2"))
}

// TestWebUIRetireRack: the racks page offers Retire on an offline rack
// only, asks before it acts, shows the region's refusal verbatim while a
// machine depends on the rack, and once nothing does retires it: the rack
// leaves the page, and the API has it retired by the token's actor.
func TestWebUIRetireRack(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, live, ns := uiSite(t, "live-rack")
	old := start(t, "rackd", "-insecure-nats", "-nats-url", ns.URL, "-data-dir", filepath.Join(t.TempDir(), "old"), "-name", "old-rack",
		"-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false", "-heartbeat-interval", "500ms")
	var oldRack rackplane.Rack
	eventually(t, 15*time.Second, "old-rack online", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		r, ok := rackByName(rs, "old-rack")
		if err != nil || !ok || !r.Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		oldRack = r
		return nil
	})
	var m struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "held", "macs": []string{"52:54:00:ee:20:01"}, "boot_rack_id": oldRack.ID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	if err := old.Stop(); err != nil {
		t.Logf("stop old-rack: %v", err)
	}

	b := newBrowser(t)
	defer b.checkClean()
	b.do("open the UI", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/racks"))
	b.see("old-rack offline, listed after the online rack", `//tbody/tr[2][td[1][normalize-space()="old-rack"]]/td[2][normalize-space()="offline"]`)
	b.see("live-rack first, online", `//tbody/tr[1][td[1][normalize-space()="live-rack"]]/td[2][normalize-space()="online"]`)
	if n := value(b, "count live-rack's Retire buttons", chromedp.Evaluate[float64](`document.evaluate('count(`+row("live-rack")+
		`//button[contains(@class, "retire")])', document, null, XPathResult.NUMBER_TYPE, null).numberValue`)); n != 0 {
		t.Errorf("the online rack's row offers Retire")
	}

	// Asked first; Cancel does nothing.
	b.do("Retire old-rack, then cancel", chromedp.Click(row("old-rack")+`//button[contains(@class, "retire")]`))
	b.see("the question", `//div[@id="rack-confirm"][contains(., "Retire rack old-rack (`+oldRack.ID+`)?")]`)
	b.do("cancel", chromedp.Click(chromedp.ID("rack-confirm-no")))
	b.do("the question gone", chromedp.WaitNotVisible(chromedp.ID("rack-confirm")))

	// A machine depends on it: the region's refusal, verbatim.
	b.do("Retire old-rack", chromedp.Click(row("old-rack")+`//button[contains(@class, "retire")]`), chromedp.Click(chromedp.ID("rack-confirm-yes")))
	b.see("the refusal naming the machine", `//p[@id="error"][contains(., "is still in use: 1 machine depends on it: held (boots from it)")][contains(., "conflict")]`)

	if code := a.call("DELETE", "/api/v1/machines/"+m.ID, nil, nil, nil); code != 200 && code != 204 {
		t.Fatalf("delete the machine: %d", code)
	}
	b.do("Retire old-rack again", chromedp.Click(row("old-rack")+`//button[contains(@class, "retire")]`), chromedp.Click(chromedp.ID("rack-confirm-yes")))
	b.see("it is retired", `//p[@id="rack-result"][contains(., "Rack old-rack retired")]`)
	b.screenshot("racks-retired")
	b.do("old-rack gone from the list", chromedp.WaitNotPresent(row("old-rack")))
	b.see("live-rack still there", row("live-rack"))
	var got rackplane.Rack
	if code := a.call("GET", "/api/v1/racks/"+oldRack.ID, nil, nil, &got); code != 200 || got.RetiredAt == nil || got.RetiredBy != "e2e" {
		t.Fatalf("the API has old-rack as %d %+v", code, got)
	}
	if live.RetiredAt != nil {
		t.Fatalf("live-rack: %+v", live)
	}
}
