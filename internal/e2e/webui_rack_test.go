package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

type uiImageVersion struct {
	ID     string
	Usable bool
}

// rackImages lists the image versions of rack id through the API, by id.
func rackImages(t *testing.T, a api, id string) map[string]uiImageVersion {
	t.Helper()
	var out struct{ Versions []uiImageVersion }
	if code := a.call("GET", "/api/v1/racks/"+id+"/images", nil, nil, &out); code != 200 {
		t.Fatalf("images of rack %s: %d", id, code)
	}
	m := map[string]uiImageVersion{}
	for _, v := range out.Versions {
		m[v.ID] = v
	}
	return m
}

// TestWebUIRackPage drives a rack's page in headless Chromium against a
// real regiond and rackd: the rack's name in the list leads to it; it
// shows the rack, its capabilities, the machines that boot from it and
// its images; an import started in the page shows its progress until it
// succeeded and the version is listed; a delete is asked first and the
// rack's refusal shows verbatim; GC shows what it would remove in a dry
// run, and removes just that when confirmed; a scrub reports a clean
// store, then the file spoilt on the rack's disk. An offline rack's page
// offers none of the image store's actions, and says why. Each change is
// checked through the API.
func TestWebUIRackPage(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	dataDir := filepath.Join(t.TempDir(), "rack-data")
	// A version counts as in flight for a minute after its import: the
	// older one is past that, and collectable, by the time GC runs.
	a, rack, ns := uiSite(t, "page-rack", "-data-dir", dataDir, "-in-flight-window", "1m", "-keep-image-versions", "1")
	const old, newer = "debian/amd64/generic/bookworm/stable/20261123", "debian/amd64/generic/bookworm/stable/20261201"
	oldSrc := bookwormSource(t, []byte("old linux\n"), []byte("old initrd.gz\n"))
	if code := a.call("POST", "/api/v1/racks/"+rack.ID+"/images/imports", nil, map[string]string{"dir": oldSrc}, nil); code != 202 {
		t.Fatalf("import: %d", code)
	}
	importedOld := time.Now()
	eventually(t, 15*time.Second, "the old version in the OS registry", func() error {
		var reg struct{ OSes []struct{ Release string } }
		a.call("GET", "/api/v1/os", nil, nil, &reg)
		if len(reg.OSes) != 1 || reg.OSes[0].Release != "bookworm" {
			return fmt.Errorf("os registry %+v", reg)
		}
		return nil
	})
	newSrc := imageSourceWith(t, "debian", "bookworm", []byte("newer linux\n"), []byte("newer initrd.gz\n"), map[string]any{"version": "20261201"})
	var m struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "booter", "macs": []string{"52:54:00:ee:40:01"},
		"boot_rack_id": rack.ID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	// A second rack, stopped: its page offers no image store action.
	offline := start(t, "rackd", "-insecure-nats", "-nats-url", ns.URL, "-data-dir", filepath.Join(t.TempDir(), "off"), "-name", "off-rack",
		"-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false", "-heartbeat-interval", "500ms")
	var offRack rackplane.Rack
	eventually(t, 15*time.Second, "off-rack online", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		r, ok := rackByName(rs, "off-rack")
		if err != nil || !ok || !r.Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		offRack = r
		return nil
	})
	if err := offline.Stop(); err != nil {
		t.Logf("stop off-rack: %v", err)
	}

	b := newBrowser(t)
	defer b.checkClean()
	field := func(id, name string) string { return `//dl[@id="` + id + `"]/dd[@data-field="` + name + `"]` }
	imageRow := func(v string) string { return `//div[@id="rack-images"]//tr[@data-version="` + v + `"]` }

	// From the racks list, by the rack's name.
	b.do("open the UI", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/racks"))
	b.do("open the rack's page", chromedp.Click(row("page-rack")+`/td[1]/a`))
	b.see("the rack's name", `//h1[normalize-space()="Rack page-rack"]`)
	if loc := b.location(); !strings.HasSuffix(loc, "#/racks/"+rack.ID) {
		t.Errorf("the rack's page is at %s", loc)
	}
	b.see("its id", field("rack-details", "id")+`[normalize-space()="`+rack.ID+`"]`)
	b.see("online", field("rack-details", "status")+`[starts-with(normalize-space(), "online last heartbeat")]`)
	b.see("its boot URL", field("rack-details", "boot url")+`[normalize-space()="`+rack.BootURL+`"]`)
	b.see("the OS it can boot", `//div[@id="rack-capabilities"]//dd[@data-field="oses"]//li[contains(., "debian/bookworm: amd64/generic")]`)
	b.see("the machine that boots from it", `//div[@id="rack-machines"]//tr[td[1]/a[normalize-space()="booter"][@href="#/machines/`+m.ID+`"]]`+
		`/td[4][normalize-space()="boots from it"]`)
	b.see("the old version, usable", imageRow(old)+`/td[2][normalize-space()="usable"]`)
	b.screenshot("rack-page")

	// Import through the page: the progress ends in success, the version
	// is listed.
	b.do("import the newer version",
		chromedp.SendKeys(chromedp.ID("import-source"), newSrc),
		chromedp.Click(chromedp.ID("import-start")))
	importRow := `//div[@id="rack-imports"]//tr[td[2][normalize-space()=` + fmt.Sprintf("%q", "dir:"+newSrc) + ` or contains(., ` + fmt.Sprintf("%q", newSrc) + `)]]`
	b.see("the import succeeded", importRow+`[td[3][normalize-space()="succeeded"]][td[4]//span[@class="percent"][normalize-space()="100%"]]`+
		`/td[5][contains(., "`+newer+`")]`)
	b.see("the newer version listed", imageRow(newer)+`/td[2][normalize-space()="usable"]`)
	b.screenshot("rack-import")
	if v := rackImages(t, a, rack.ID); !v[newer].Usable || !v[old].Usable || len(v) != 2 {
		t.Fatalf("after the import in the UI the API has %+v", v)
	}

	// Delete is asked first; the rack refuses a version just imported.
	b.do("delete the newer version", chromedp.Click(imageRow(newer)+`//button[contains(@class, "delete-image")]`))
	b.see("the question", `//div[@id="image-confirm"][contains(., "Delete image version `+newer+` from rack page-rack?")]`)
	b.do("cancel", chromedp.Click(chromedp.ID("image-confirm-no")))
	b.do("the question gone", chromedp.WaitNotVisible(chromedp.ID("image-confirm")))
	b.do("delete it after all", chromedp.Click(imageRow(newer)+`//button[contains(@class, "delete-image")]`), chromedp.Click(chromedp.ID("image-confirm-yes")))
	b.see("the rack's refusal", `//p[@id="error"][contains(., "handed out")][contains(., "conflict")]`)
	if v := rackImages(t, a, rack.ID); len(v) != 2 {
		t.Fatalf("after a refused delete the API has %+v", v)
	}

	// GC: the dry run says what would go, nothing goes until confirmed.
	if wait := time.Until(importedOld.Add(65 * time.Second)); wait > 0 {
		t.Logf("waiting %s for the old version to leave the in-flight window", wait.Round(time.Second))
		time.Sleep(wait)
	}
	b.do("GC dry run", chromedp.Click(chromedp.ID("image-gc")))
	b.see("what would go", `//p[@id="gc-dry-run-report"][starts-with(normalize-space(), "A garbage collection would remove 1 version and 2 files")]`)
	b.see("the old version named", `//ul[@id="gc-would-remove"]/li[normalize-space()="`+old+`"]`)
	b.screenshot("rack-gc-dry-run")
	if v := rackImages(t, a, rack.ID); len(v) != 2 {
		t.Fatalf("after the dry run the API has %+v", v)
	}
	b.do("run it", chromedp.Click(chromedp.ID("gc-run")))
	b.see("what went", `//p[@id="gc-report"][starts-with(normalize-space(), "Removed 1 version and 2 files")]`)
	b.do("the old version gone from the list", chromedp.WaitNotPresent(imageRow(old)))
	b.see("the newer one still there", imageRow(newer))
	if v := rackImages(t, a, rack.ID); len(v) != 1 || !v[newer].Usable {
		t.Fatalf("after GC in the UI the API has %+v", v)
	}
	b.screenshot("rack-gc-done")

	// Scrub: clean, then a file spoilt on the rack's disk.
	b.do("scrub", chromedp.Click(chromedp.ID("image-scrub")))
	b.see("a clean report", `//p[@id="scrub-report"][starts-with(normalize-space(), "Checked 2 files")][contains(., "none is corrupt")]`)
	var spoilt string
	_ = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(filepath.Dir(p))) == "blobs" && spoilt == "" {
			spoilt = p
		}
		return err
	})
	if spoilt == "" {
		t.Fatalf("no stored file under %s", dataDir)
	}
	if err := os.WriteFile(spoilt, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.do("scrub again", chromedp.Click(chromedp.ID("image-scrub")))
	b.see("the corrupt file", `//p[@id="scrub-report"][contains(., "1 file is corrupt, now quarantined on the rack")]`)
	b.see("its version", `//div[@id="image-result"]//tr[@data-sha256="`+filepath.Base(spoilt)+`"]/td[4][normalize-space()="`+newer+`"]`)
	b.see("the version unusable", imageRow(newer)+`/td[2][starts-with(normalize-space(), "unusable")]`)
	b.screenshot("rack-scrub")
	if v := rackImages(t, a, rack.ID); v[newer].Usable {
		t.Fatalf("after the scrub found a corrupt file the API has %+v", v)
	}

	// The offline rack: no action, and why.
	eventually(t, 15*time.Second, "off-rack offline", func() error {
		var r rackplane.Rack
		if a.call("GET", "/api/v1/racks/"+offRack.ID, nil, nil, &r); r.Online {
			return fmt.Errorf("still online")
		}
		return nil
	})
	b.do("open the offline rack's page", chromedp.Navigate(a.base+"/#/racks/"+offRack.ID))
	b.see("offline", field("rack-details", "status")+`[starts-with(normalize-space(), "offline since")][contains(., "; last heartbeat")]`)
	for _, id := range []string{"image-gc", "image-scrub", "import-start"} {
		b.see(id+" disabled with why", `//button[@id="`+id+`"][@disabled][contains(@title, "Rack off-rack is offline")]`)
	}
	b.see("the note", `//p[@id="rack-offline-note"][contains(., "its image store cannot be asked")]`)
	b.screenshot("rack-offline")
}

// TestWebUIScrubOnce: while a scrub runs (up to two minutes: the rack
// reads every stored file), the rack's poll does not offer Scrub, or GC
// while its dry run is asked, again; each is offered once it ends.
func TestWebUIScrubOnce(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, _ := uiSite(t, "scrub-rack")
	b := newBrowser(t)
	defer b.checkClean()
	b.do("sign in", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)))
	b.do("open the rack's page", chromedp.Navigate(a.base+"/#/racks/"+rack.ID))
	b.see("online", `//dl[@id="rack-details"]/dd[@data-field="status"][starts-with(normalize-space(), "online")]`)
	b.see("scrub offered", `//button[@id="image-scrub"][not(@disabled)]`)
	// The rack's answers to scrub and GC come after a poll of the rack
	// (every 5 s) has come and gone.
	const poll = 5 * time.Second
	value(b, "slow the store's actions down", chromedp.Evaluate[bool](`(() => {
		const f = window.fetch;
		window.fetch = (u, o) => /\/images\/(scrub|gc)/.test(String(u))
			? new Promise((r) => setTimeout(r, `+fmt.Sprint((poll+3*time.Second).Milliseconds())+`)).then(() => f(u, o)) : f(u, o);
		return true;
	})()`))
	for _, c := range []struct{ id, done string }{
		{"image-scrub", `//p[@id="scrub-report"][contains(., "none is corrupt")]`},
		{"image-gc", `//p[@id="gc-dry-run-report"]`},
	} {
		b.do("click "+c.id, chromedp.Click(chromedp.ID(c.id)))
		time.Sleep(poll + 1500*time.Millisecond)
		if !value(b, c.id+" still disabled", chromedp.Evaluate[bool](`document.getElementById(`+jsString(c.id)+`).disabled`)) {
			t.Errorf("%s is offered again while it runs: the rack's poll enabled it", c.id)
		}
		b.see(c.id+" done", c.done)
		b.see(c.id+" offered again", `//button[@id="`+c.id+`"][not(@disabled)]`)
	}
}

// TestWebUISubnetLeasesPastAPage: a subnet's page shows 100 more leases
// with each More, past the API's 1000 a page too, without an error.
func TestWebUISubnetLeasesPastAPage(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, ns := uiSite(t, "lease-rack")
	var sn struct{ ID string }
	if code := a.call("POST", "/api/v1/subnets", nil, map[string]any{"rack_id": rack.ID, "cidr": "10.40.0.0/21",
		"ranges": []map[string]string{{"start": "10.40.0.10", "end": "10.40.7.250"}}}, &sn); code != 201 {
		t.Fatalf("create subnet: %d", code)
	}
	const total = 1001
	now := time.Now().UTC()
	hour := now.Add(time.Hour)
	var changes []events.DHCPLeaseChange
	for i := range total {
		changes = append(changes, events.DHCPLeaseChange{Action: events.DHCPAcked, MAC: fmt.Sprintf("52:54:00:ee:%02x:%02x", i>>8, i&0xff),
			IP: fmt.Sprintf("10.40.%d.%d", 1+i/200, 10+i%200), Subnet: "10.40.0.0/21", Expires: &hour, Count: 1, At: now})
	}
	ev, err := events.New(events.RackSource(rack.ID), events.TypeDHCPLeasesChanged, events.RackStreamName(rack.ID), now,
		events.DHCPLeasesChanged{Mode: "managed", Since: now.Add(-10 * time.Second), Until: now, Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), events.RackEventSubject(rack.ID, ev.Type), raw); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the leases in the API", func() error {
		var got struct{ Next string }
		if a.call("GET", "/api/v1/subnets/"+sn.ID+"/leases?limit=1000", nil, nil, &got); got.Next == "" {
			return fmt.Errorf("not 1000 leases yet")
		}
		return nil
	})

	b := newBrowser(t)
	defer b.checkClean()
	b.do("sign in", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)))
	b.do("open the subnet", chromedp.Navigate(a.base+"/#/subnets/"+sn.ID))
	count := func(n int) string {
		return fmt.Sprintf(`//div[@id="subnet-leases"][count(.//tr[@data-mac])=%d]`, n)
	}
	b.see("the first 100", count(100))
	for n := 200; n <= total+99; n += 100 {
		b.do(fmt.Sprint("More, to ", n), chromedp.Click(`//div[@id="subnet-leases"]/button[normalize-space()="More"]`))
		b.see(fmt.Sprint(min(n, total), " leases"), count(min(n, total)))
	}
	b.see("no More past the last", `//div[@id="subnet-leases"][not(button)]`)
	if msg := evalString(b, "read the error line", `(document.getElementById("error") || {}).textContent || ""`); msg != "" {
		t.Errorf("the page says: %s", msg)
	}
}

// TestWebUISubnets drives the subnets screens: a subnet created in the
// form (an overlapping one refused with the region's message), its page
// with the leases its rack reported through NATS (an expired one not
// shown, a known MAC linked to its machine), an edit saved at the
// version it was made on, an edit made on a stale version refused with
// the current subnet shown, and a delete asked first. Each is checked
// through the API.
func TestWebUISubnets(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, rack, ns := uiSite(t, "dhcp-rack")
	var m struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "leaser", "macs": []string{"52:54:00:ee:30:01"}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	type subnet struct {
		ID, CIDR, Domain string
		LeaseSeconds     int64 `json:"lease_seconds"`
		Version          int64
		Ranges           []struct{ Start, End string }
	}
	subnets := func() []subnet {
		var out struct{ Subnets []subnet }
		a.call("GET", "/api/v1/subnets", nil, nil, &out)
		return out.Subnets
	}

	b := newBrowser(t)
	defer b.checkClean()
	b.do("open the subnets", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/subnets"))
	b.see("none yet", `//p[contains(., "No subnet yet")]`)
	b.do("waiting for the rack in the form", chromedp.Query(`//select[@id="subnet-rack"]/option[@value="`+rack.ID+`"]`))
	b.do("create a subnet",
		chromedp.SetValue(chromedp.ID("subnet-rack"), rack.ID),
		chromedp.SendKeys(chromedp.ID("subnet-cidr"), "10.30.0.0/24"),
		chromedp.SendKeys(chromedp.ID("subnet-ranges"), "10.30.0.100-10.30.0.199"),
		chromedp.SendKeys(chromedp.ID("subnet-router"), "10.30.0.1"),
		chromedp.SendKeys(chromedp.ID("subnet-dns"), "10.30.0.1, 10.30.0.2"),
		chromedp.Click(chromedp.ID("subnet-create")))
	subnetRow := `//tr[td[1][normalize-space()="10.30.0.0/24"]]`
	b.see("the subnet listed", subnetRow+`[td[2]/a[normalize-space()="dhcp-rack"]][td[4][normalize-space()="10.30.0.100–10.30.0.199"]]`+
		`/td[6][normalize-space()="10.30.0.1, 10.30.0.2"]`)
	ss := subnets()
	if len(ss) != 1 || ss[0].CIDR != "10.30.0.0/24" || len(ss[0].Ranges) != 1 || ss[0].Ranges[0].Start != "10.30.0.100" || ss[0].Version != 1 {
		t.Fatalf("after creating a subnet in the UI the API has %+v", ss)
	}
	sn := ss[0]
	b.do("create an overlapping one",
		chromedp.SendKeys(chromedp.ID("subnet-cidr"), "10.30.0.128/25"),
		chromedp.Click(chromedp.ID("subnet-create")))
	b.see("the region's refusal", `//p[@id="error"][contains(., "overlaps subnet `+sn.ID+`")][contains(., "conflict")]`)
	b.screenshot("subnets")

	// The rack reports leases through NATS, as itself.
	now := time.Now().UTC()
	hour, gone := now.Add(time.Hour), now.Add(-time.Minute)
	ev, err := events.New(events.RackSource(rack.ID), events.TypeDHCPLeasesChanged, events.RackStreamName(rack.ID), now,
		events.DHCPLeasesChanged{Mode: "managed", Since: now.Add(-10 * time.Second), Until: now, Changes: []events.DHCPLeaseChange{
			{Action: events.DHCPAcked, MAC: "52:54:00:ee:30:01", IP: "10.30.0.100", Subnet: "10.30.0.0/24", Hostname: "leaser", Expires: &hour, Count: 2, At: now},
			{Action: events.DHCPAcked, MAC: "52:54:00:ee:30:02", IP: "10.30.0.101", Subnet: "10.30.0.0/24", Expires: &hour, Count: 1, At: now},
			{Action: events.DHCPAcked, MAC: "52:54:00:ee:30:03", IP: "10.30.0.102", Subnet: "10.30.0.0/24", Expires: &gone, Count: 1, At: now},
		}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), events.RackEventSubject(rack.ID, ev.Type), raw); err != nil {
		t.Fatal(err)
	}

	b.do("open the subnet", chromedp.Click(subnetRow+`/td[1]/a`))
	b.see("its page", `//h1[normalize-space()="Subnet 10.30.0.0/24"]`)
	leaseRow := func(mac string) string { return `//div[@id="subnet-leases"]//tr[@data-mac="` + mac + `"]` }
	b.see("the machine's lease", leaseRow("52:54:00:ee:30:01")+`[td[1][normalize-space()="10.30.0.100"]][td[4]/a[@href="#/machines/`+m.ID+`"][normalize-space()="leaser"]]`+
		`[td[5][starts-with(normalize-space(), "in ")]]/td[7][normalize-space()="2"]`)
	b.see("the other lease", leaseRow("52:54:00:ee:30:02")+`/td[4][normalize-space()="unknown"]`)
	if n := value(b, "count the leases", chromedp.Evaluate[float64](`document.querySelectorAll("#subnet-leases tr[data-mac]").length`)); n != 2 {
		t.Errorf("%v leases shown, want 2 (the expired one not)", n)
	}
	var leases struct{ Leases []struct{ MAC string } }
	if a.call("GET", "/api/v1/subnets/"+sn.ID+"/leases", nil, nil, &leases); len(leases.Leases) != 2 {
		t.Errorf("the API has leases %+v", leases)
	}

	// An edit, saved at the version it was made on.
	b.do("edit the lease time",
		chromedp.SendKeys(chromedp.ID("edit-lease"), "3600"),
		chromedp.Click(chromedp.ID("subnet-save")))
	b.see("saved", `//span[@id="subnet-saved"][normalize-space()="Saved (version 2)."]`)
	b.see("the new lease time", `//dl[@id="subnet-details"]/dd[@data-field="lease time"][normalize-space()="1h"]`)
	b.screenshot("subnet-page")
	if ss := subnets(); len(ss) != 1 || ss[0].LeaseSeconds != 3600 || ss[0].Version != 2 {
		t.Fatalf("after the edit in the UI the API has %+v", ss)
	}

	// Someone else changes it; the page's edit, made on version 2, is refused.
	if code := a.call("PATCH", "/api/v1/subnets/"+sn.ID, map[string]string{"If-Match": `"2"`}, map[string]any{"domain": "elsewhere.example"}, nil); code != 200 {
		t.Fatalf("patch through the API: %d", code)
	}
	b.do("edit the domain on the stale page",
		chromedp.SendKeys(chromedp.ID("edit-domain"), "lab.example"),
		chromedp.Click(chromedp.ID("subnet-save")))
	b.see("the refusal", `//p[@id="subnet-stale"][contains(., "the subnet changed since this page loaded it")]`)
	b.see("the current subnet", `//dl[@id="subnet-details"]/dd[@data-field="domain"][normalize-space()="elsewhere.example"]`)
	b.screenshot("subnet-stale")
	if ss := subnets(); ss[0].Domain != "elsewhere.example" || ss[0].Version != 3 {
		t.Fatalf("after the refused edit the API has %+v", ss)
	}

	// Delete, asked first.
	b.do("delete", chromedp.Click(chromedp.ID("subnet-delete")))
	b.see("the question", `//div[@id="subnet-confirm"][contains(., "Delete subnet 10.30.0.0/24 of rack dhcp-rack?")]`)
	b.do("cancel", chromedp.Click(chromedp.ID("subnet-confirm-no")))
	if ss := subnets(); len(ss) != 1 {
		t.Fatalf("after a cancelled delete the API has %+v", ss)
	}
	b.do("delete after all", chromedp.Click(chromedp.ID("subnet-delete")), chromedp.Click(chromedp.ID("subnet-confirm-yes")))
	b.see("the list without it", `//p[contains(., "No subnet yet")]`)
	if code := a.call("GET", "/api/v1/subnets/"+sn.ID, nil, nil, nil); code != 404 {
		t.Fatalf("after the delete in the UI the API answers %d", code)
	}
}
