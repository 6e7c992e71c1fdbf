package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// signIn opens the UI in b signed in with tok, at the view next
// (#/preseeds: "/preseeds").
func signIn(b *browser, base, tok, next string) {
	b.t.Helper()
	b.do("open the UI at "+next, chromedp.Navigate(base+"/#token="+url.QueryEscape(tok)+"&next="+next))
}

// clickConfirmed clicks a button that asks twice, then its Yes.
func clickConfirmed(b *browser, what, scope, cls string) {
	b.t.Helper()
	b.do(what+": ask", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " `+cls+` ")]`))
	b.do(what+": confirm", chromedp.Click(scope+`//button[contains(concat(" ", @class, " "), " `+cls+`-yes ")]`))
}

// evalString evaluates JavaScript in the page for a string.
func evalString(b *browser, what, js string) string {
	b.t.Helper()
	return value(b, what, chromedp.Evaluate[string](js))
}

type preseedGot struct {
	Preseed struct {
		CurrentVersion int64 `json:"current_version"`
		LatestVersion  int64 `json:"latest_version"`
	}
	Version struct {
		Version int64
		Content string
		Format  string
		Author  string
	}
}

// TestWebUIPreseeds drives the preseed screens: a preseed created in the
// page and edited twice, its history, the diff between versions 1 and 3
// showing the changed lines, a rollback to version 1 (asked twice; the
// API's current content is version 1's), and a save after a concurrent
// edit through the API, refused with 412 and said so, the typed text kept
// until Reload brings the newest version; a machine deployed with it is
// listed with the version it pinned.
func TestWebUIPreseeds(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, _, _ := uiSite(t, "preseed-rack")
	b := newBrowser(t)
	defer b.checkClean()

	const v1 = "#cloud-config\npackages: [nginx]\nhostname: {{.Machine.Hostname}}\n"
	const v2 = "#cloud-config\npackages: [nginx, curl]\nhostname: {{.Machine.Hostname}}\n"
	const v3 = "#cloud-config\npackages: [nginx, curl]\nhostname: {{.Machine.Hostname}}\ntimezone: UTC\n"
	get := func() preseedGot {
		var p preseedGot
		if code := a.call("GET", "/api/v1/preseeds/web", nil, nil, &p); code != 200 {
			t.Fatalf("GET preseed web: %d", code)
		}
		return p
	}

	signIn(b, a.base, a.token, "/preseeds")
	b.see("the create form", `//form[@id="create-preseed"]`)
	b.do("create preseed web",
		chromedp.SendKeys(chromedp.ID("new-preseed-name"), "web"),
		chromedp.SetValue(chromedp.ID("new-preseed-content"), v1),
		chromedp.Click(chromedp.CSS(`#create-preseed button[type="submit"]`)))
	b.see("web's editor at version 1", `//p[@id="preseed-summary"][starts-with(normalize-space(), "Current version 1 (cloud-config, by e2e")]`)
	if got := evalString(b, "read the editor", `document.getElementById("preseed-content").value`); got != v1 {
		t.Fatalf("the editor holds %q, want %q", got, v1)
	}
	if p := get(); p.Version.Version != 1 || p.Version.Content != v1 || p.Version.Format != "cloud-config" {
		t.Fatalf("after Create the API has %+v", p)
	}

	for i, content := range []string{v2, v3} {
		want := i + 2
		b.do(fmt.Sprintf("save version %d", want),
			chromedp.SetValue(chromedp.ID("preseed-content"), content),
			chromedp.SendKeys(chromedp.ID("preseed-comment"), fmt.Sprintf("edit %d", want)),
			chromedp.Click(chromedp.ID("preseed-save")))
		b.see(fmt.Sprintf("version %d saved", want), fmt.Sprintf(`//p[@id="preseed-saved"][contains(., "Saved as version %d")]`, want))
		if p := get(); p.Version.Version != int64(want) || p.Version.Content != content {
			t.Fatalf("after save %d the API has %+v", want, p)
		}
	}
	b.see("the history's newest version, current", `//tr[@data-version="3"][td[1][contains(., "current")]][td[2][normalize-space()="e2e"]][td[4][normalize-space()="cloud-config"]][td[6][normalize-space()="edit 3"]]`)
	b.see("version 1 in the history", `//tr[@data-version="1"][td[2][normalize-space()="e2e"]]`)
	b.do("view version 2", chromedp.Click(`//tr[@data-version="2"]//button[contains(@class, "view-version")]`))
	b.see("version 2's content", `//div[@id="preseed-version-view"]/h3[starts-with(., "Version 2 ")]`)
	if got := evalString(b, "read version 2", `document.getElementById("preseed-version-content").value`); got != v2 {
		t.Errorf("version 2 shows %q, want %q", got, v2)
	}
	b.screenshot("preseed-editor")

	// The diff between versions 1 and 3, line by line.
	b.do("diff 1 → 3",
		chromedp.SetValue(chromedp.ID("diff-from"), "1"),
		chromedp.SetValue(chromedp.ID("diff-to"), "3"),
		chromedp.Click(chromedp.ID("diff-show")))
	lines := `//div[@id="preseed-diff-lines"]//div[contains(concat(" ", @class, " "), " diff-line ")]`
	b.see("the removed line", `//div[@id="preseed-diff-lines"]//div[contains(@class, "diff-del")][.="-packages: [nginx]"]`)
	b.see("the added lines", `//div[@id="preseed-diff-lines"]//div[contains(@class, "diff-add")][.="+packages: [nginx, curl]"]`)
	b.see("the added timezone", `//div[@id="preseed-diff-lines"]//div[contains(@class, "diff-add")][.="+timezone: UTC"]`)
	b.see("an unchanged line", `//div[@id="preseed-diff-lines"]//div[contains(@class, "diff-ctx")][.=" hostname: {{.Machine.Hostname}}"]`)
	b.see("the file lines", `//div[@id="preseed-diff-lines"]//div[contains(@class, "diff-file")][starts-with(., "--- web@1")]`)
	if n := value(b, "count the diff's lines", chromedp.Evaluate[float64](`document.evaluate('count(`+lines+`)', document, null, XPathResult.NUMBER_TYPE, null).numberValue`)); n != 7 {
		t.Errorf("the diff has %v lines, want 7 (2 file lines, 1 removed, 2 added, 2 unchanged)", n)
	}
	b.screenshot("preseed-diff")

	// Roll back to version 1: asked twice, then version 4 has its content.
	b.do("ask to roll back to version 1", chromedp.Click(`//tr[@data-version="1"]//button[contains(concat(" ", @class, " "), " rollback ")]`))
	b.see("the question", `//tr[@data-version="1"]//span[contains(@class, "inline-confirm")][contains(., "Make version 1's content current again, as version 4?")]`)
	b.do("cancel", chromedp.Click(`//tr[@data-version="1"]//button[contains(@class, "rollback-no")]`))
	if p := get(); p.Preseed.CurrentVersion != 3 {
		t.Fatalf("a cancelled rollback changed the preseed: %+v", p)
	}
	// Text typed in the editor and not saved is not thrown away by a
	// rollback unasked: the page says so and offers to discard it.
	const unsaved = "#cloud-config\npackages: [unsaved]\n"
	b.do("type in the editor", retype("preseed-content", unsaved))
	clickConfirmed(b, "roll back to version 1 with unsaved text", `//tr[@data-version="1"]`, "rollback")
	b.see("the rollback held back", `//p[@id="preseed-rolled"][contains(., "Not rolled back: the editor holds text you have not saved.")]`)
	if p := get(); p.Preseed.CurrentVersion != 3 {
		t.Fatalf("a rollback held back for unsaved text changed the preseed: %+v", p)
	}
	if got := evalString(b, "read the editor", `document.getElementById("preseed-content").value`); got != unsaved {
		t.Errorf("after the held-back rollback the editor holds %q, want the typed text", got)
	}
	b.screenshot("preseed-rollback-unsaved")
	b.do("discard the text and roll back", chromedp.Click(chromedp.ID("rollback-discard")))
	b.see("the rollback said", `//p[@id="preseed-rolled"][contains(., "version 4 has the content of version 1")]`)
	if p := get(); p.Preseed.CurrentVersion != 4 || p.Version.Version != 4 || p.Version.Content != v1 {
		t.Fatalf("after Roll back to 1 the API has %+v", p)
	}
	b.see("version 4 current in the history", `//tr[@data-version="4"][td[1][contains(., "current")]][td[6][contains(., "rollback to version 1")]]`)
	if got := evalString(b, "read the editor", `document.getElementById("preseed-content").value`); got != v1 {
		t.Errorf("after the rollback the editor holds %q, want version 1's", got)
	}

	// Someone saves through the API meanwhile: the page's save is a 412,
	// said so, and the operator's text stays until Reload.
	const theirs = "#cloud-config\npackages: [apache2]\n"
	const mine = "#cloud-config\npackages: [nginx, vim]\n"
	if code := a.call("PUT", "/api/v1/preseeds/web", map[string]string{"If-Match": `"4"`}, map[string]string{"content": theirs}, nil); code != 200 {
		t.Fatalf("concurrent edit through the API: %d", code)
	}
	b.do("save over the newer version",
		chromedp.SetValue(chromedp.ID("preseed-content"), mine),
		chromedp.Click(chromedp.ID("preseed-save")))
	b.see("the conflict", `//div[@id="preseed-conflict"][contains(., "Not saved: someone else saved a new version of web after you opened version 4.")][contains(., "precondition_failed, HTTP 412")]`)
	b.screenshot("preseed-conflict")
	if p := get(); p.Version.Version != 5 || p.Version.Content != theirs {
		t.Fatalf("after the refused save the API has %+v", p)
	}
	if got := evalString(b, "read the editor", `document.getElementById("preseed-content").value`); got != mine {
		t.Errorf("after the conflict the editor holds %q, want the typed text", got)
	}
	b.do("reload", chromedp.Click(chromedp.ID("preseed-reload")))
	b.see("reloaded", `//p[@id="preseed-saved"][contains(., "Reloaded the newest version.")]`)
	if got := evalString(b, "read the editor", `document.getElementById("preseed-content").value`); got != theirs {
		t.Errorf("after Reload the editor holds %q, want version 5's", got)
	}
	b.do("save on the newest", chromedp.SetValue(chromedp.ID("preseed-content"), mine), chromedp.Click(chromedp.ID("preseed-save")))
	b.see("version 6 saved", `//p[@id="preseed-saved"][contains(., "Saved as version 6")]`)
	if p := get(); p.Version.Version != 6 || p.Version.Content != mine {
		t.Fatalf("after the save on the newest the API has %+v", p)
	}

	// A deployment pins the current version; the preseed's page lists the
	// machine with it.
	importTinyImage(t, a)
	var pin struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "pin1", "macs": []string{"52:54:00:ee:30:01"}}, &pin); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var refused struct{ Error struct{ Message string } }
	if code := a.call("POST", "/api/v1/machines/"+pin.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm", "preseed": "web"}, &refused); code != 200 {
		t.Fatalf("deploy pin1 with preseed web: %d %s", code, refused.Error.Message)
	}
	b.do("reload web's page", chromedp.Reload())
	b.see("pin1 with version 6", `//tr[@data-machine-id="`+pin.ID+`"][td[1][normalize-space()="pin1"]][td[2][normalize-space()="6"]][td[3][normalize-space()="deploying"]]`)
	b.screenshot("preseed-pinned")

	b.do("go to Preseeds", chromedp.Click(chromedp.CSS(`a[data-view="preseeds"]`)))
	b.see("web in the list", row("web")+`[td[2][normalize-space()="6"]][td[3][normalize-space()="cloud-config"]][td[4][normalize-space()="global"]]`)
	b.screenshot("preseeds")
}

// TestWebUITokens drives the tokens screen: an API token made in the page
// is shown once, in a read-only field, and works against the API; after
// leaving the screen the page has it nowhere; revoking it (asked twice)
// makes the API refuse it. A join token likewise. Revoking the token the
// tab signed in with signs the tab out, saying why.
func TestWebUITokens(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, _, _ := uiSite(t, "token-rack")
	b := newBrowser(t)
	defer b.checkClean()

	type tok struct {
		ID, Name, Actor string
		RevokedAt       *time.Time `json:"revoked_at"`
	}
	byName := func(name string) tok {
		var out struct{ Tokens []tok }
		a.call("GET", "/api/v1/tokens", nil, nil, &out)
		for _, x := range out.Tokens {
			if x.Name == name {
				return x
			}
		}
		t.Fatalf("no token %s in %+v", name, out)
		return tok{}
	}

	signIn(b, a.base, a.token, "/tokens")
	b.see("the e2e token, this tab's", row("e2e (this tab)"))
	b.do("create token ci",
		chromedp.SendKeys(chromedp.ID("new-token-name"), "ci"),
		chromedp.SendKeys(chromedp.ID("new-token-actor"), "ci-bot"),
		chromedp.Click(chromedp.CSS(`#create-token button[type="submit"]`)))
	b.see("the secret, once", `//input[@id="new-token-secret"][@readonly]`)
	b.see("the warning", `//div[contains(@class, "secret-box")]//p[contains(., "This is the only time the region shows this token")]`)
	secret := evalString(b, "read the secret", `document.getElementById("new-token-secret").value`)
	if !strings.HasPrefix(secret, "rp_") {
		t.Fatalf("the secret field holds %q", secret)
	}
	ci := byName("ci")
	b.see("ci in the list", `//tr[@data-token-id="`+ci.ID+`"][td[2][normalize-space()="ci-bot"]][td[6][normalize-space()="active"]]`)
	b.screenshot("tokens-created")
	asCI := api{t: t, base: a.base, token: secret}
	if code := asCI.call("GET", "/api/v1/racks", nil, nil, nil); code != 200 {
		t.Fatalf("the new token against the API: %d", code)
	}

	// Leaving the screen forgets the secret.
	b.do("go to Racks", chromedp.Click(chromedp.CSS(`a[data-view="racks"]`)))
	b.do("back to Tokens", chromedp.Click(chromedp.CSS(`a[data-view="tokens"]`)))
	b.see("ci listed again", `//tr[@data-token-id="`+ci.ID+`"]`)
	if found := value(b, "look for the secret", chromedp.Evaluate[bool](`document.body.innerText.includes(`+jsString(secret)+`) || `+
		`[...document.querySelectorAll("input, textarea")].some((e) => e.value.includes(`+jsString(secret)+`))`)); found {
		t.Errorf("the secret is still in the page after leaving the screen")
	}

	clickConfirmed(b, "revoke ci", `//tr[@data-token-id="`+ci.ID+`"]`, "revoke-token")
	b.see("ci revoked", `//tr[@data-token-id="`+ci.ID+`"][td[6][starts-with(normalize-space(), "revoked")]]`)
	if code := asCI.call("GET", "/api/v1/racks", nil, nil, nil); code != 401 {
		t.Fatalf("the revoked token against the API: %d, want 401", code)
	}
	if byName("ci").RevokedAt == nil {
		t.Errorf("the API lists ci as not revoked")
	}

	// Join tokens: shown once, listed, revoked.
	b.do("create a join token",
		chromedp.SendKeys(chromedp.ID("new-join-token-ttl"), "2h"),
		chromedp.Click(chromedp.CSS(`#create-join-token button[type="submit"]`)))
	b.see("the join token, once", `//input[@id="new-join-token-secret"][@readonly]`)
	join := evalString(b, "read the join token", `document.getElementById("new-join-token-secret").value`)
	if !strings.HasPrefix(join, "rpj_") {
		t.Fatalf("the join token field holds %q", join)
	}
	var jts struct {
		JoinTokens []struct {
			ID        string
			ExpiresAt time.Time  `json:"expires_at"`
			RevokedAt *time.Time `json:"revoked_at"`
		} `json:"join_tokens"`
	}
	a.call("GET", "/api/v1/join-tokens", nil, nil, &jts)
	if len(jts.JoinTokens) != 1 || time.Until(jts.JoinTokens[0].ExpiresAt) < 110*time.Minute || time.Until(jts.JoinTokens[0].ExpiresAt) > 2*time.Hour {
		t.Fatalf("join tokens after Create: %+v", jts)
	}
	jid := jts.JoinTokens[0].ID
	if !strings.Contains(join, strings.ReplaceAll(jid, "-", "")) {
		t.Errorf("the join token shown %q is not join token %s", join, jid)
	}
	b.see("the join token listed", `//tr[@data-join-token-id="`+jid+`"][td[5][normalize-space()="active"]]`)
	b.screenshot("tokens-join")
	clickConfirmed(b, "revoke the join token", `//tr[@data-join-token-id="`+jid+`"]`, "revoke-join-token")
	b.see("the join token revoked", `//tr[@data-join-token-id="`+jid+`"][td[5][starts-with(normalize-space(), "revoked")]]`)
	a.call("GET", "/api/v1/join-tokens", nil, nil, &jts)
	if jts.JoinTokens[0].RevokedAt == nil {
		t.Errorf("the API lists the join token as not revoked: %+v", jts)
	}
	b.screenshot("tokens")

	// A tab revokes its own token: it is signed out and told why.
	var own struct{ Token, ID string }
	if code := a.call("POST", "/api/v1/tokens", nil, map[string]string{"name": "tab"}, &own); code != 201 {
		t.Fatalf("create token tab: %d", code)
	}
	tab := b.tab()
	defer tab.checkClean()
	signIn(tab, a.base, own.Token, "/tokens")
	tab.see("its own token", `//tr[@data-token-id="`+own.ID+`"][td[1][normalize-space()="tab (this tab)"]]`)
	tab.do("ask to revoke it", chromedp.Click(`//tr[@data-token-id="`+own.ID+`"]//button[contains(concat(" ", @class, " "), " revoke-token ")]`))
	tab.see("the warning", `//tr[@data-token-id="`+own.ID+`"]//span[contains(., "It is the token this tab signed in with")]`)
	tab.do("confirm", chromedp.Click(`//tr[@data-token-id="`+own.ID+`"]//button[contains(@class, "revoke-token-yes")]`))
	tab.see("signed out, with why", `//p[@id="login-message"][contains(., "You revoked the token this tab was signed in with (tab)")]`)
	tab.screenshot("tokens-own-revoked")
	if code := (api{t: t, base: a.base, token: own.Token}).call("GET", "/api/v1/racks", nil, nil, nil); code != 401 {
		t.Errorf("the tab's revoked token against the API: %d, want 401", code)
	}
}

// TestWebUITokenSecretForgotten: signing out from the Tokens screen,
// which changes no address, forgets a new token's secret as leaving the
// screen does: no input element the page still holds, in the document
// or detached, has it.
func TestWebUITokenSecretForgotten(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, _, _ := uiSite(t, "secret-rack")
	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/tokens")
	b.do("create token ci",
		chromedp.SendKeys(chromedp.ID("new-token-name"), "ci"),
		chromedp.Click(chromedp.CSS(`#create-token button[type="submit"]`)))
	b.see("the secret, once", `//input[@id="new-token-secret"][@readonly]`)
	secret := evalString(b, "read the secret", `document.getElementById("new-token-secret").value`)
	if !strings.HasPrefix(secret, "rp_") {
		t.Fatalf("the secret field holds %q", secret)
	}
	if n := value(b, "count the inputs holding the secret", inputsHolding(secret)); n != 1 {
		t.Fatalf("%d inputs hold the secret on the Tokens screen, want its field", n)
	}
	b.do("sign out", chromedp.Click(chromedp.ID("sign-out")))
	b.see("the sign-in form", `//form[@id="login-form"]`)
	if n := value(b, "count the inputs holding the secret", inputsHolding(secret)); n != 0 {
		t.Errorf("after signing out, %d input elements the page holds still have the new token's secret", n)
	}
}

// inputsHolding counts the input elements of the page's heap, in the
// document or not (a closure may hold a detached one), whose value is s.
func inputsHolding(s string) chromedp.Action[int] {
	return func(ctx context.Context, t *chromedp.Target) (int, error) {
		const group = "e2e-inputs-holding"
		defer func() {
			_, _ = cdp.Call(ctx, t, runtime.ReleaseObjectGroup, runtime.ReleaseObjectGroupParams{ObjectGroup: group})
		}()
		proto, err := cdp.Call(ctx, t, runtime.Evaluate, runtime.EvaluateParams{Expression: "HTMLInputElement.prototype", ObjectGroup: group})
		if err != nil {
			return 0, err
		}
		// queryObjects collects the garbage first: what it finds is held.
		objs, err := cdp.Call(ctx, t, runtime.QueryObjects, runtime.QueryObjectsParams{PrototypeObjectID: proto.Result.ObjectID, ObjectGroup: group})
		if err != nil {
			return 0, err
		}
		arg, err := json.Marshal(s)
		if err != nil {
			return 0, err
		}
		byValue := true
		res, err := cdp.Call(ctx, t, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
			FunctionDeclaration: `function (s) { return this.filter((e) => e.value === s).length; }`,
			ObjectID:            objs.Objects.ObjectID, Arguments: []*runtime.CallArgument{{Value: jsonv2.Value(arg)}},
			ReturnByValue: &byValue, ObjectGroup: group})
		if err != nil {
			return 0, err
		}
		if res.ExceptionDetails != nil {
			return 0, fmt.Errorf("count inputs: %s", res.ExceptionDetails.Text)
		}
		var n int
		err = json.Unmarshal(res.Result.Value, &n)
		return n, err
	}
}

// jsString quotes s for JavaScript.
func jsString(s string) string {
	return fmt.Sprintf("%q", s)
}

// TestWebUIStorage drives the storage screen against a rack with the loop
// storage provider (rack/storage's test provider; nothing here attaches,
// so no loop device is made): the provider is listed usable, a volume is
// created for a machine, grown, snapshotted and deleted (asked twice)
// through the page, each checked through the API, and the machine's page
// shows its volumes.
func TestWebUIStorage(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	search := t.TempDir()
	if err := os.CopyFS(filepath.Join(search, "loop"), os.DirFS("../../rack/storage/testdata/providers/loop")); err != nil {
		t.Fatal(err)
	}
	a, _, _ := uiSite(t, "storage-rack", "-storage-search-path", search)
	eventually(t, 15*time.Second, "the loop provider usable", func() error {
		var ps struct {
			StorageProviders []struct {
				Name  string
				Racks []struct{ Online, Valid bool }
			} `json:"storage_providers"`
		}
		a.call("GET", "/api/v1/storage-providers", nil, nil, &ps)
		for _, p := range ps.StorageProviders {
			if p.Name == "loop" && len(p.Racks) == 1 && p.Racks[0].Online && p.Racks[0].Valid {
				return nil
			}
		}
		return fmt.Errorf("storage providers %+v", ps)
	})
	var vm struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "vm1", "macs": []string{"52:54:00:ee:20:01"}}, &vm); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	type vol struct {
		ID, Name, State string
		SizeMiB         int64 `json:"size_mib"`
		Snapshots       []struct{ Name string }
		Parameters      map[string]string
	}
	volumes := func() []vol {
		var out struct{ Volumes []vol }
		if code := a.call("GET", "/api/v1/machines/"+vm.ID+"/volumes?removed=true", nil, nil, &out); code != 200 {
			t.Fatalf("list volumes: %d", code)
		}
		return out.Volumes
	}
	dir := t.TempDir()

	b := newBrowser(t)
	defer b.checkClean()
	signIn(b, a.base, a.token, "/storage")
	b.see("the loop provider, usable", `//tr[@data-provider="loop"][td[2][normalize-space()="storage-rack"]][td[4][normalize-space()="available"]]`)
	b.see("its snapshot script", `//tr[@data-provider="loop"]/td[6][contains(., "snapshot")]`)
	b.see("no volume yet", `//div[@id="volumes"]/p[normalize-space()="No machine has a volume."]`)
	b.see("the dir parameter", `//input[@data-param="dir"]`)
	b.do("create a volume for vm1",
		chromedp.SetValue(chromedp.ID("new-volume-size"), "64"),
		chromedp.SendKeys(`//input[@data-param="dir"]`, dir),
		chromedp.Click(chromedp.ID("create-volume-submit")))
	var v vol
	eventually(t, 10*time.Second, "the volume through the API", func() error {
		vs := volumes()
		if len(vs) != 1 || vs[0].State != "created" || vs[0].SizeMiB != 64 || vs[0].Parameters["dir"] != dir {
			return fmt.Errorf("volumes %+v", vs)
		}
		v = vs[0]
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, v.Name+".img")); err != nil {
		t.Fatalf("the provider made no backing file: %v", err)
	}
	r := `//tr[@data-volume-id="` + v.ID + `"]`
	b.see("the volume in the list", r+`[td[1][normalize-space()="vm1"]][td[5][normalize-space()="created"]][td[4][normalize-space()="64 MiB"]]`)
	if n := value(b, "count the actions a created volume offers", chromedp.Evaluate[float64](`document.evaluate('count(`+r+
		`//button[contains(@class, "detach")])', document, null, XPathResult.NUMBER_TYPE, null).numberValue`)); n != 0 {
		t.Errorf("a volume that is not attached offers Detach")
	}
	b.screenshot("storage")

	b.do("grow it to 128 MiB",
		chromedp.SetValue(r+`//input[contains(@class, "grow-size")]`, "128"),
		chromedp.Click(r+`//button[contains(@class, "grow")]`))
	b.see("grown", r+`[td[4][normalize-space()="128 MiB"]]`)
	b.see("said so", `//p[@id="storage-result"][normalize-space()="Grown to 128 MiB."]`)
	// The region's view follows the rack's events, which may come just
	// after the reply the page showed.
	eventually(t, 5*time.Second, "the API sees the volume grown", func() error {
		if vs := volumes(); vs[0].SizeMiB != 128 {
			return fmt.Errorf("after Grow the API has %+v", vs)
		}
		return nil
	})

	b.do("snapshot it",
		chromedp.SetValue(r+`//input[contains(@class, "snapshot-name")]`, "before-upgrade"),
		chromedp.Click(r+`//button[contains(@class, "snapshot")]`))
	b.see("the snapshot listed", r+`/td[7][normalize-space()="before-upgrade"]`)
	eventually(t, 5*time.Second, "the API sees the snapshot", func() error {
		if vs := volumes(); len(vs[0].Snapshots) != 1 || vs[0].Snapshots[0].Name != "before-upgrade" {
			return fmt.Errorf("after Snapshot the API has %+v", vs)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, v.Name+"@before-upgrade.img")); err != nil {
		t.Errorf("the provider made no snapshot file: %v", err)
	}
	b.screenshot("storage-snapshot")

	// The machine's page shows its volumes too.
	b.do("open vm1", chromedp.Navigate(a.base+"/#/machines/"+vm.ID))
	b.see("vm1's volume on its page", `//div[@id="machine-volumes"]`+r+`[td[4][normalize-space()="created"]][td[3][normalize-space()="128 MiB"]]`)
	b.screenshot("machine-volumes")

	b.do("back to Storage", chromedp.Click(chromedp.CSS(`a[data-view="storage"]`)))
	b.do("ask to delete it", chromedp.Click(r+`//button[contains(concat(" ", @class, " "), " delete-volume ")]`))
	b.see("the question", r+`//span[contains(@class, "inline-confirm")][contains(., "Delete volume `+v.Name+`?")]`)
	b.do("confirm", chromedp.Click(r+`//button[contains(@class, "delete-volume-yes")]`))
	b.see("no volume left", `//div[@id="volumes"]/p[normalize-space()="No machine has a volume."]`)
	eventually(t, 5*time.Second, "the API sees the volume removed", func() error {
		if vs := volumes(); vs[0].State != "removed" {
			return fmt.Errorf("after Delete the API has %+v", vs)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, v.Name+".img")); !os.IsNotExist(err) {
		t.Errorf("the backing file is still there: %v", err)
	}
	b.do("show removed volumes", chromedp.Click(chromedp.ID("show-removed")))
	b.see("the removed volume, with no actions", r+`[td[5][normalize-space()="removed"]]/td[10][normalize-space()="none"]`)
	b.screenshot("storage-removed")
}

// TestWebUIScripts drives the commissioning scripts screens: a script
// created with its content, edited, listed with its content on demand,
// and deleted (asked twice), each checked through the API.
func TestWebUIScripts(t *testing.T) {
	endToEnd(t)
	chromiumPath(t)
	a, _, _ := uiSite(t, "scripts-rack")
	b := newBrowser(t)
	defer b.checkClean()
	type script struct {
		Name, Content, Description string
		TimeoutSeconds             int `json:"timeout_seconds"`
	}
	get := func() (script, int) {
		var sc script
		code := a.call("GET", "/api/v1/commissioning-scripts/10-hello", nil, nil, &sc)
		return sc, code
	}
	const v1 = "#!/bin/sh\necho hello\n"
	const v2 = "#!/bin/sh\necho hello world\nuname -a\n"

	signIn(b, a.base, a.token, "/scripts")
	b.see("no script yet", `//p[normalize-space()="No commissioning script."]`)
	b.do("create 10-hello",
		chromedp.SendKeys(chromedp.ID("new-script-name"), "10-hello"),
		chromedp.SendKeys(chromedp.ID("script-description"), "says hello"),
		chromedp.SendKeys(chromedp.ID("script-timeout"), "30"),
		chromedp.SetValue(chromedp.ID("script-content"), v1),
		chromedp.Click(chromedp.CSS(`#create-script button[type="submit"]`)))
	b.see("its page", `//p[@id="script-summary"][contains(., "21 B, sha256 ")]`)
	if sc, code := get(); code != 200 || sc.Content != v1 || sc.Description != "says hello" || sc.TimeoutSeconds != 30 {
		t.Fatalf("after Create the API has %d %+v", code, sc)
	}
	if got := evalString(b, "read the content", `document.getElementById("script-content").value`); got != v1 {
		t.Errorf("the editor holds %q, want %q", got, v1)
	}

	b.do("edit it", chromedp.SetValue(chromedp.ID("script-content"), v2), chromedp.Click(chromedp.ID("script-save")))
	b.see("saved", `//p[@id="script-saved"][normalize-space()="Saved."]`)
	if sc, _ := get(); sc.Content != v2 || sc.TimeoutSeconds != 30 {
		t.Fatalf("after Save the API has %+v", sc)
	}
	b.screenshot("script")

	b.do("go to Scripts", chromedp.Click(chromedp.CSS(`a[data-view="scripts"]`)))
	b.see("10-hello listed", row("10-hello")+`[td[2][normalize-space()="says hello"]][td[4][normalize-space()="30 s"]]`)
	b.do("show its content", chromedp.Click(row("10-hello")+`//details/summary`))
	b.see("its content", row("10-hello")+`//pre[contains(., "echo hello world")]`)
	b.screenshot("scripts")

	b.do("open it", chromedp.Click(row("10-hello")+`/td[1]/a`))
	b.see("its editor", `//textarea[@id="script-content"]`)
	clickConfirmed(b, "delete it", `//form[@id="edit-script"]`, "delete-script")
	b.see("the list without it", `//p[normalize-space()="No commissioning script."]`)
	if _, code := get(); code != 404 {
		t.Fatalf("after Delete the API answers %d for the script, want 404", code)
	}
}
