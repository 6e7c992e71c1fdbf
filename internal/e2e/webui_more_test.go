package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// retype replaces what field id holds by text as typed: a key first, so
// that the page knows the field is being edited, then the field emptied
// (which is no input event: the page would not see it) and text typed.
func retype(id, text string) chromedp.Action[chromedp.Void] {
	empty := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`(document.getElementById(`+jsString(id)+`).value = '', true)`)(ctx, t)
		return err
	})
	return chromedp.Steps(chromedp.SendKeys(chromedp.ID(id), "x"), empty, chromedp.SendKeys(chromedp.ID(id), text))
}

type uiEdited struct {
	ID, Hostname string
	MACs         []string
	BootRackID   *string `json:"boot_rack_id"`
	Version      int64
}

// TestWebUIMachineEdit: a machine's hostname, MACs and boot rack changed
// on its page are what the API then has; an edit begun before someone
// else's change through the API is refused (412), the page says so and
// shows the machine as it is now; Delete asks first (Cancel keeps the
// machine), then deletes it and goes back to the list.
func TestWebUIMachineEdit(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "edit-rack")
	m := createMachine(t, a, "edit1", "52:54:00:ee:30:01")

	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/machines/"+m.ID)
	field := func(f string) string { return `//dl[@id="machine-details"]/dd[@data-field="` + f + `"]` }
	b.see("edit1's page", field("hostname")+`[normalize-space()="edit1"]`)
	b.see("the edit form, filled", `//form[@id="edit-form"]`)
	if got := evalString(b, "the hostname field", `document.getElementById('edit-hostname').value`); got != "edit1" {
		t.Fatalf("hostname field %q", got)
	}
	b.do("the boot rack offered by name", chromedp.WaitReady(`//select[@id="edit-boot-rack"]/option[@value="`+rack.ID+`"][normalize-space()="edit-rack"]`))

	b.do("edit hostname, MACs and boot rack",
		retype("edit-hostname", "edit1-renamed"), retype("edit-macs", "52:54:00:EE:30:01, 52:54:00:ee:30:11"),
		chromedp.SetValue(chromedp.ID("edit-boot-rack"), rack.ID),
		chromedp.Click(chromedp.ID("edit-save")))
	b.see("saved", `//span[@id="edit-saved"][normalize-space()="Saved."]`)
	b.see("the new hostname shown", field("hostname")+`[normalize-space()="edit1-renamed"]`)
	var got uiEdited
	if code := a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got); code != 200 || got.Hostname != "edit1-renamed" ||
		strings.Join(got.MACs, ",") != "52:54:00:ee:30:01,52:54:00:ee:30:11" || got.BootRackID == nil || *got.BootRackID != rack.ID {
		t.Fatalf("the API has %d %+v", code, got)
	}
	b.screenshot("machine-edited")

	// An edit begun, then a change through the API: the page's edit was
	// made on the version before, and is refused.
	b.do("begin an edit", retype("edit-hostname", "edit1-mine"))
	if code := a.call("PATCH", "/api/v1/machines/"+m.ID, nil, map[string]any{"hostname": "edit1-theirs"}, nil); code != 200 {
		t.Fatalf("PATCH through the API: %d", code)
	}
	b.see("the page follows the machine", field("hostname")+`[normalize-space()="edit1-theirs"]`)
	if got := evalString(b, "the hostname field", `document.getElementById('edit-hostname').value`); got != "edit1-mine" {
		t.Fatalf("the typed hostname was replaced while typing: %q", got)
	}
	b.do("save the stale edit", chromedp.Click(chromedp.ID("edit-save")))
	b.see("refused as changed meanwhile", `//span[@id="edit-saved"][contains(., "changed meanwhile")]`)
	b.screenshot("machine-edit-conflict")
	if code := a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got); code != 200 || got.Hostname != "edit1-theirs" {
		t.Fatalf("after the refused edit the API has %d %+v", code, got)
	}
	value(b, "the form showing the machine as it is now", chromedp.Poll[bool](`document.getElementById('edit-hostname').value === 'edit1-theirs'`,
		chromedp.WithPollingTimeout(5*time.Second)))

	// Delete: asked first; Cancel keeps it.
	scope := `//span[@id="delete-machine"]`
	b.do("Delete, then cancel", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " delete-machine ")]`))
	b.see("the question", scope+`//span[contains(@class, "inline-confirm")][contains(., "Delete machine edit1-theirs?")]`)
	b.screenshot("machine-delete-asked")
	b.do("cancel", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " delete-machine-no ")]`))
	if code := a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, nil); code != 200 {
		t.Fatalf("after Cancel the machine is %d", code)
	}
	// A deletion confirmed on a page that has not yet heard of a change
	// made meanwhile is refused, not done to a machine the operator did
	// not see: the page sends the version it showed.
	b.do("Delete: ask", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " delete-machine ")]`))
	status := value(b, "rename through the API, then confirm the deletion in the page", chromedp.Evaluate[float64](fmt.Sprintf(`fetch('/api/v1/machines/%s', {
			method: 'PATCH', headers: {'Authorization': 'Bearer ' + %q, 'Content-Type': 'application/json'}, body: '{"hostname": "edit1-late"}'})
		.then((r) => { document.querySelector('#delete-machine .delete-machine-yes').click(); return r.status; })`, m.ID, a.token), chromedp.EvalAwaitPromise))
	if status != 200 {
		t.Fatalf("PATCH through the API: %v", status)
	}
	b.see("the deletion refused as changed meanwhile", `//p[@id="error"][contains(., "was changed")][contains(., "HTTP 412")]`)
	if code := a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got); code != 200 || got.Hostname != "edit1-late" {
		t.Fatalf("after the refused deletion the API has %d %+v", code, got)
	}
	b.see("the page follows the machine", field("hostname")+`[normalize-space()="edit1-late"]`)
	clickConfirmed(b, "delete the machine", scope, "delete-machine")
	b.see("back on the list", `//h1[normalize-space()="Machines"]`)
	if loc := b.location(); !strings.HasSuffix(loc, "#/machines") {
		t.Errorf("after the deletion the page is at %s", loc)
	}
	if code := a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, nil); code != 404 {
		t.Fatalf("after the deletion the machine is %d, want 404", code)
	}
}

// TestWebUICommissioningResults: the results of a machine's commissioning
// scripts, as its rack passes them on, are listed on its page as they
// arrive, with exit code, duration and the output a click away.
func TestWebUICommissioningResults(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, ns := uiSite(t, "scripts-rack")
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
	var m struct {
		ID           string
		DeploymentID string `json:"deployment_id"`
	}
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "scripted", "macs": []string{"52:54:00:ee:40:01"},
		"boot_rack_id": rack.ID}, &m); code != 201 {
		t.Fatalf("create: %d", code)
	}

	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/machines/"+m.ID)
	b.see("no results yet", `//div[@id="commissioning-results"]//p[contains(., "No commissioning script has reported")]`)
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/commission", nil, nil, &m); code != 200 || m.DeploymentID == "" {
		t.Fatalf("commission: %d %+v", code, m)
	}

	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	report := func(name string, exit int, output string, ms int64) {
		t.Helper()
		ev, err := events.New(events.RackSource(rack.ID), events.TypeAgentScriptReported, events.MachineStreamName(m.ID), time.Now(),
			events.AgentScriptReported{MachineID: m.ID, OperationID: m.DeploymentID, Name: name, ExitCode: exit, Output: output, DurationMS: ms})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(context.Background(), events.RackEventSubject(rack.ID, events.TypeAgentScriptReported), raw); err != nil {
			t.Fatal(err)
		}
	}
	report("10-lshw", 0, "<b>not html</b>\nline two\n", 1500)
	report("20-fails", 3, "disk /dev/sdz: not found\n", 40)
	res := `//div[@id="commissioning-results"]`
	b.see("the passing script", res+`//tr[@data-script="10-lshw"][td[2][contains(., "exit 0")]][td[3][normalize-space()="1.5 s"]]`)
	b.see("the failing script", res+`//tr[@data-script="20-fails"][td[2][contains(., "exit 3")]][td[3][normalize-space()="40 ms"]]`)
	b.do("open the output", chromedp.Click(res+`//tr[@data-script="10-lshw"]//summary`))
	b.see("the output as text", res+`//tr[@data-script="10-lshw"]//pre[contains(., "<b>not html</b>")]`)
	if n := evalString(b, "count b elements", `String(document.querySelectorAll('#commissioning-results b').length)`); n != "0" {
		t.Errorf("the output was parsed as HTML: %s <b> elements", n)
	}
	b.screenshot("machine-commissioning-results")
}

// TestWebUIRejected: a message the region refuses (not JSON; an event of
// no known type) is listed on the refused messages view with its reason,
// reached from the dashboard's Needs attention and from the event log.
func TestWebUIRejected(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, ns := uiSite(t, "junk-rack")
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.Publish(ctx, events.RackEventSubject(rack.ID, events.TypeRackRegistered), []byte("\x00\xffnot json <script>")); err != nil {
		t.Fatal(err)
	}
	unknown, _ := events.New(events.RackSource(rack.ID), "rackplane.rack.no_such_thing.v1", events.RackStreamName(rack.ID), time.Now(), map[string]int{"x": 1})
	raw, _ := events.Encode(unknown)
	if _, err := js.Publish(ctx, events.RackEventSubject(rack.ID, unknown.Type), raw); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both refused", func() error {
		var out struct {
			Rejected []struct{ Reason string } `json:"rejected_events"`
		}
		a.call("GET", "/api/v1/rejected-events", nil, nil, &out)
		if len(out.Rejected) != 2 {
			return fmt.Errorf("rejected %+v", out.Rejected)
		}
		return nil
	})

	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/dashboard")
	b.see("the dashboard's count", `//a[@id="dash-rejected"][@data-count="2"]`)
	b.do("follow it", chromedp.Click(`//a[@id="dash-rejected"]`))
	b.see("the refused messages view", `//h1[normalize-space()="Refused messages"]`)
	b.see("the unknown type, newest first", `//div[@id="rejected-list"]//tbody/tr[1][td[2][contains(., "unknown_type")]][td[3][normalize-space()="rackplane.rack.no_such_thing.v1"]]`)
	b.see("the garbage", `//div[@id="rejected-list"]//tbody/tr[2][td[2][contains(., "malformed")]]/td[5][contains(., "`+rack.ID+`")]`)
	b.screenshot("rejected")

	b.do("the event log", chromedp.Navigate(a.base+"/#/events"))
	b.do("its link to the refused messages", chromedp.Click(`//a[@id="events-rejected-link"]`))
	b.see("the refused messages again", `//div[@id="rejected-list"]//tbody/tr[2]`)
}

// TestWebUIRackCredential: a rack that joined without a join token (the
// test site's racks are on -insecure-nats, its region without the NATS
// auth callout) has no credential, which its page says, offering no
// revocation.
func TestWebUIRackCredential(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "plain-rack")
	if code := a.call("GET", "/api/v1/racks/"+rack.ID+"/credential", nil, nil, nil); code != 404 {
		t.Fatalf("the API has a credential: %d", code)
	}
	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/racks/"+rack.ID)
	b.see("no credential", `//p[@id="credential-none"][contains(., "did not join with a join token")]`)
	b.do("no revocation offered", chromedp.WaitNotPresent(`//button[contains(@class, "revoke-credential")]`))
	b.screenshot("rack-credential-none")
}

// TestWebUILicenceKey: a release that takes a licence key (Windows, which
// the rack validates) has a form on its OS registry row: a key the rack
// refuses is shown as the API said it and not stored; a good one is set,
// the row says so, and the field is emptied.
func TestWebUILicenceKey(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "win-rack")
	src := imageSource(t, "windows", "win2022", []byte("not really a kernel\n"), []byte("not really an initrd\n"))
	if code := a.call("POST", "/api/v1/racks/"+rack.ID+"/images/imports", nil, map[string]string{"dir": src}, nil); code != 202 {
		t.Fatalf("import: %d", code)
	}
	eventually(t, 15*time.Second, "windows in the OS registry, taking a key", func() error {
		var reg struct {
			OSes []struct {
				OS                 string
				RequiresLicenceKey bool `json:"requires_licence_key"`
			}
		}
		a.call("GET", "/api/v1/os", nil, nil, &reg)
		for _, o := range reg.OSes {
			if o.OS == "windows" && o.RequiresLicenceKey {
				return nil
			}
		}
		return fmt.Errorf("os registry %+v", reg)
	})
	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/os")
	form := `//form[@data-os="windows/win2022"]`
	b.see("the key not set", `//td[span[@class="licence-state"][normalize-space()="needed, not set"]]`+form)
	if typ := evalString(b, "the field's type", `document.querySelector('form[data-os="windows/win2022"] input').type`); typ != "password" {
		t.Errorf("the key field is of type %q", typ)
	}
	b.do("a key the rack refuses", chromedp.SendKeys(form+`//input`, "hunter2-not-a-key"), chromedp.Click(form+`//button`))
	b.see("the refusal", `//p[@id="error"][contains(., "HTTP 400")]`)
	b.do("a good key", chromedp.SendKeys(form+`//input`, "QWERT-12345-ZXCVB-67890-POIUY"), chromedp.Click(form+`//button`))
	b.see("the key set", `//td[span[@class="licence-state"][normalize-space()="set"]]`)
	b.see("said so", form+`//span[contains(., "Key set")]`)
	if v := evalString(b, "the field", `document.querySelector('form[data-os="windows/win2022"] input').value`); v != "" {
		t.Errorf("the key field still holds %q", v)
	}
	if strings.Contains(evalString(b, "the page", `document.documentElement.outerHTML`), "QWERT-12345") {
		t.Errorf("the page shows the key")
	}
	b.screenshot("os-licence-key")
	if code := a.call("GET", "/api/v1/os/windows/win2022/licence-key", nil, nil, nil); code != 200 {
		t.Fatalf("the API has no key: %d", code)
	}
}

// TestWebUIRackCredentialRevoke: `rackplane dev`'s rack joins NATS with a
// join token, as racks do with the region's auth callout. Its page shows
// the credential (public key, valid); Revoke asks first (Cancel keeps it),
// then revokes it: the page says so and the API has it revoked.
func TestWebUIRackCredentialRevoke(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	dataDir := filepath.Join(t.TempDir(), "dev")
	httpAddr := freeAddr(t)
	dev := start(t, "rackplane", "dev", "-data-dir", dataDir, "-database-url", pgtest.NewDatabase(t),
		"-nats-addr", freeAddr(t), "-http-addr", httpAddr, "-rack-http-addr", freeAddr(t), "-tftp-addr", freeUDPAddr(t))
	a := api{t: t, base: "http://" + httpAddr}
	var rack rackplane.Rack
	eventually(t, 60*time.Second, "rackplane dev up with its rack", func() error {
		b, err := os.ReadFile(filepath.Join(dataDir, "token"))
		if err != nil {
			return err
		}
		a.token = strings.TrimSpace(string(b))
		rs, err := racks(context.Background(), a.base, a.token)
		if err != nil || len(rs) != 1 || !rs[0].Online {
			return fmt.Errorf("racks %+v %v\n%s", rs, err, tail(dev.Output(), 20))
		}
		rack = rs[0]
		return nil
	})
	var c struct {
		NKey      string     `json:"nkey"`
		RevokedAt *time.Time `json:"revoked_at"`
	}
	if code := a.call("GET", "/api/v1/racks/"+rack.ID+"/credential", nil, nil, &c); code != 200 || c.NKey == "" {
		t.Fatalf("the rack's credential: %d %+v", code, c)
	}

	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/racks/"+rack.ID)
	cred := `//dl[@id="credential-details"]`
	b.see("the public key", cred+`/dd[@data-field="public key"][normalize-space()="`+c.NKey+`"]`)
	b.see("valid", cred+`/dd[@data-field="state"][normalize-space()="valid"]`)
	scope := `//div[@id="rack-credential"]`
	b.do("Revoke, then cancel", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " revoke-credential ")]`))
	b.see("the question, explained", scope+`//span[contains(@class, "inline-confirm")][contains(., "must join again with a join token")]`)
	b.screenshot("rack-credential-asked")
	b.do("cancel", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " revoke-credential-no ")]`))
	if code := a.call("GET", "/api/v1/racks/"+rack.ID+"/credential", nil, nil, &c); code != 200 || c.RevokedAt != nil {
		t.Fatalf("after Cancel the credential is %d %+v", code, c)
	}
	clickConfirmed(b, "revoke the credential", scope, "revoke-credential")
	b.see("said so", `//p[@id="credential-result"][contains(., "Credential revoked")]`)
	b.see("revoked", cred+`/dd[@data-field="state"][contains(., "revoked")][contains(., "must join again")]`)
	b.do("no second revocation offered", chromedp.WaitNotPresent(scope+`//button[contains(@class, "revoke-credential")]`))
	b.screenshot("rack-credential-revoked")
	if code := a.call("GET", "/api/v1/racks/"+rack.ID+"/credential", nil, nil, &c); code != 200 || c.RevokedAt == nil {
		t.Fatalf("after the revocation the credential is %d %+v", code, c)
	}
}
