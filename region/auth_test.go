package region_test

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region"
)

func TestTokensAndAuditLog(t *testing.T) {
	h := startRegion(t)

	// Without a token, or with a bad one: 401. Probes need none.
	for _, tok := range []string{"", "rp_00000000000000000000000000000000_00", "garbage"} {
		req, _ := http.NewRequest("GET", h.api+"/api/v1/racks", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("token %q: %d", tok, resp.StatusCode)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(h.api + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s without a token: %d", p, resp.StatusCode)
		}
	}

	// The test's token (actor "tester") makes one for alice.
	var created struct{ Token, ID, Actor string }
	if code := h.do("POST", "/api/v1/tokens", map[string]string{"name": "ops", "actor": "alice"}, &created); code != 201 || created.Actor != "alice" {
		t.Fatalf("create token: %d %+v", code, created)
	}
	alice := &harness{t: t, api: h.api, client: &http.Client{Transport: bearer{created.Token}}}
	var e struct {
		Error struct{ Code, Message string }
	}
	if code := alice.do("PUT", "/api/v1/os/nope/nope/licence-key", map[string]string{"key": "k"}, &e); code != 404 {
		t.Fatalf("alice's mutation: %d %+v", code, e)
	}
	var toks struct {
		Tokens []map[string]any
	}
	h.getJSON("/api/v1/tokens", &toks)
	for _, tk := range toks.Tokens {
		for k, v := range tk {
			if s, ok := v.(string); ok && strings.Contains(created.Token, s) && len(s) > 40 {
				t.Fatalf("token list shows a secret in %s", k)
			}
		}
	}
	if code := h.do("DELETE", "/api/v1/tokens/"+created.ID, nil, nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if code := alice.do("GET", "/api/v1/racks", nil, &e); code != 401 {
		t.Fatalf("revoked token still works: %d", code)
	}

	// The audit log names the actor of every mutation, success or not.
	var audit struct {
		Entries []struct {
			Actor, Action, Target, Outcome string
			RequestID                      string `json:"request_id"`
			Status                         int
		}
	}
	h.getJSON("/api/v1/audit", &audit)
	var got []string
	for _, a := range audit.Entries {
		if a.RequestID == "" {
			t.Errorf("entry without request id: %+v", a)
		}
		got = append(got, a.Actor+" "+a.Action+" "+a.Outcome)
	}
	want := []string{
		"tester POST /api/v1/tokens success",
		"alice PUT /api/v1/os/{os}/{release}/licence-key failure",
		"tester DELETE /api/v1/tokens/{id} success",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var filtered struct{ Entries []struct{ Actor string } }
	h.getJSON("/api/v1/audit?actor=alice", &filtered)
	if len(filtered.Entries) != 1 {
		t.Fatalf("audit filtered by actor: %+v", filtered)
	}

	// The database itself refuses to change the audit log, through psql.
	for _, sql := range []string{"UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"} {
		out, err := exec.Command("psql", h.dbURL, "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "append-only") {
			t.Errorf("psql %q: err=%v output=%s", sql, err, out)
		}
	}
	h.getJSON("/api/v1/audit", &audit)
	if len(audit.Entries) != 3 || audit.Entries[1].Actor != "alice" {
		t.Fatalf("audit log changed: %+v", audit.Entries)
	}
}

// TestRevokedTokenRefusedByEveryRegion: two region instances on one
// database each accept a token on several requests (from memory after the
// first); revoked through one, it is refused by that one at the very next
// request and by the other once the revocation reaches it, while the
// revoking token goes on working on both.
func TestRevokedTokenRefusedByEveryRegion(t *testing.T) {
	a := startRegion(t)
	b := startRegionOn(t, a.dbURL, a.dbURL, func(*region.Config) {}, testLogger())
	var created struct{ Token, ID string }
	if code := a.do("POST", "/api/v1/tokens", map[string]string{"name": "ops", "actor": "alice"}, &created); code != 201 {
		t.Fatalf("create token: %d", code)
	}
	aliceOn := func(h *harness) *harness {
		return &harness{t: t, api: h.api, client: &http.Client{Transport: bearer{created.Token}}}
	}
	var racks struct{ Racks []any }
	for _, h := range []*harness{a, b} {
		for i := 0; i < 3; i++ {
			if code := aliceOn(h).getJSON("/api/v1/racks", &racks); code != 200 {
				t.Fatalf("alice on %s: %d", h.api, code)
			}
		}
	}
	if code := a.do("DELETE", "/api/v1/tokens/"+created.ID, nil, nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	var e struct{ Error struct{ Code string } }
	if code := aliceOn(a).getJSON("/api/v1/racks", &e); code != 401 {
		t.Fatalf("revoked token accepted by the region that revoked it: %d", code)
	}
	b.eventually(10*time.Second, "the other region refusing the revoked token", func() error {
		if code := aliceOn(b).getJSON("/api/v1/racks", &e); code != 401 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	for _, h := range []*harness{a, b} {
		if code := h.getJSON("/api/v1/racks", &racks); code != 200 {
			t.Fatalf("the revoking token on %s: %d", h.api, code)
		}
	}
}
