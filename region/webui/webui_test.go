package webui_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/region/api"
	"github.com/rackplane/rackplane/region/webui"
)

// server is the API server with the UI mounted, as regiond wires them. No
// database is needed: nothing here gets past the routing or the token check.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	ui, err := webui.New()
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(api.Deps{Logger: slog.New(slog.DiscardHandler)})
	ui.Register(s)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPageAndAssetsCarrySecurityHeaders(t *testing.T) {
	ts := server(t)
	for _, c := range []struct{ path, ctype, want string }{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/ui/app.js"></script>`},
		{"/ui/core.js", "text/javascript; charset=utf-8", "export function el("},
		{"/ui/", "text/html; charset=utf-8", `id="login-form"`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "textContent"},
		{"/ui/app.css", "text/css; charset=utf-8", "--accent"},
		{"/ui/config.css", "text/css; charset=utf-8", ".diff-add"},
		{"/ui/icon.svg", "image/svg+xml", "<svg"},
	} {
		resp, body := get(t, ts.URL+c.path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != c.ctype || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d %q, body has %q: %v", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.want, strings.Contains(body, c.want))
		}
		for h, want := range map[string]string{
			"Content-Security-Policy": webui.ContentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("GET %s: %s %q, want %q", c.path, h, got, want)
			}
		}
		// A browser revalidates with the ETag and gets nothing new.
		if again, _ := get(t, ts.URL+c.path, "If-None-Match", resp.Header.Get("ETag")); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", c.path, again.StatusCode)
		}
	}
	if !strings.Contains(webui.ContentSecurityPolicy, "default-src 'self'") || strings.Contains(webui.ContentSecurityPolicy, "unsafe") {
		t.Errorf("CSP %q is not strict", webui.ContentSecurityPolicy)
	}
}

// The page has no inline script or style for the CSP to refuse, and the
// script never hands data to innerHTML.
func TestNoInlineCodeNoInnerHTML(t *testing.T) {
	ts := server(t)
	_, page := get(t, ts.URL+"/")
	for _, bad := range []string{"<script>", "<style", " style=", " onclick=", "javascript:"} {
		if strings.Contains(page, bad) {
			t.Errorf("index.html has %q", bad)
		}
	}
	for _, name := range modules(t, ts) {
		_, js := get(t, ts.URL+"/ui/"+name)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if strings.Contains(js, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
}

// modules are the page's script modules, found as the browser finds
// them: from the page's script tag through every static import. A module
// imported but not served fails here rather than as a blank page.
func modules(t *testing.T, ts *httptest.Server) []string {
	t.Helper()
	imports := regexp.MustCompile(`(?m)^import (?:[^;]*? from )?'\./([a-z0-9-]+\.js)';`)
	seen := map[string]bool{}
	todo := []string{"app.js"}
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		resp, js := get(t, ts.URL+"/ui/"+name)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /ui/%s: %d", name, resp.StatusCode)
		}
		for _, m := range imports.FindAllStringSubmatch(js, -1) {
			todo = append(todo, m[1])
		}
	}
	if !seen["core.js"] {
		t.Fatalf("app.js imports no core.js: %v", seen)
	}
	return slices.Sorted(maps.Keys(seen))
}

func TestAPIKeepsItsPaths(t *testing.T) {
	ts := server(t)
	for _, path := range []string{"/api/v1/nosuch", "/api/", "/nosuch"} {
		resp, body := get(t, ts.URL+path)
		var e api.ErrorBody
		if resp.StatusCode != 404 || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != "not_found" {
			t.Errorf("GET %s: %d %s, want the API's JSON 404", path, resp.StatusCode, body)
		}
	}
	if resp, body := get(t, ts.URL+"/ui/nosuch.js"); resp.StatusCode != 404 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET /ui/nosuch.js: %d %s", resp.StatusCode, body)
	}
	// The page is public; the API behind it is not.
	if resp, _ := get(t, ts.URL+"/api/v1/racks"); resp.StatusCode != 401 {
		t.Errorf("GET /api/v1/racks without a token: %d, want 401", resp.StatusCode)
	}
}

func TestMountRefusesAPIPaths(t *testing.T) {
	s := api.New(api.Deps{Logger: slog.New(slog.DiscardHandler)})
	defer func() {
		if recover() == nil {
			t.Error("Mount of an /api/ pattern did not panic")
		}
	}()
	s.Mount("GET /api/v1/x", http.NotFoundHandler())
}
