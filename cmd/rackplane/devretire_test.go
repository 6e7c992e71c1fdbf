package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region/regiontest"
)

// racks is GET /api/v1/racks (query: "" or "?retired=true").
func (d *devSystem) racks(query string) ([]rackplane.Rack, error) {
	var out struct{ Racks []rackplane.Rack }
	code, err := d.get("/api/v1/racks"+query, &out)
	if err == nil && code != 200 {
		err = fmt.Errorf("GET /api/v1/racks%s: %d", query, code)
	}
	return out.Racks, err
}

// status is what GET path answers with token.
func (d *devSystem) status(token, path string) int {
	req, _ := http.NewRequest("GET", d.api+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDevRetiresItsStaleRack is the sequence of a developer who deletes
// .rackplane and runs `rackplane dev` again on the same database: the
// earlier dev's rack, whose identity went with the directory, is retired
// as soon as the region has it offline, so one online dev-rack is left,
// listed first; the earlier API token and join token no longer work; and
// the README's commands work against the first rack listed and against
// dev-rack by name from the start.
func TestDevRetiresItsStaleRack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev twice")
	}
	dbURL := pgtest.NewDatabase(t)
	dataDir := filepath.Join(t.TempDir(), ".rackplane")
	first := startDevOn(t, dataDir, dbURL)
	regiontest.Eventually(t, 30*time.Second, "the first dev's rack online", first.rackOnline("dev-rack", true))
	old, err := first.racks("")
	if err != nil || len(old) != 1 {
		t.Fatalf("racks of the first dev: %+v %v", old, err)
	}
	oldToken := first.token()
	oldJoin, err := os.ReadFile(filepath.Join(dataDir, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	first.stop()
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}

	took := time.Now()
	d := startDevOn(t, dataDir, dbURL)
	b, err := os.ReadFile(filepath.Join(dataDir, "rack", "rack-id"))
	if err != nil {
		t.Fatal(err)
	}
	newID := strings.TrimSpace(string(b))
	// Once the new rack has registered, whether or not the earlier one is
	// retired yet (the region may still count it online): the first rack
	// listed is the new one.
	var rs []rackplane.Rack
	regiontest.Eventually(t, 30*time.Second, "the new dev's rack listed", func() error {
		var err error
		if rs, err = d.racks(""); err != nil || len(rs) == 0 || rs[0].ID != newID {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		return nil
	})
	if rs[0].ID == old[0].ID || !rs[0].Online || rs[0].Name != "dev-rack" {
		t.Fatalf("racks while the earlier rack may still be there: %+v", rs)
	}
	regiontest.Eventually(t, 30*time.Second, "one dev-rack left", func() error {
		rs, err := d.racks("")
		if err != nil {
			return err
		}
		if len(rs) != 1 || rs[0].ID != newID || !rs[0].Online {
			return fmt.Errorf("racks %+v", rs)
		}
		return nil
	})
	t.Logf("the earlier rack retired %s after dev started", time.Since(took).Round(time.Millisecond))
	c := &client{base: d.api, token: d.token(), http: http.DefaultClient}
	if id, err := c.rackID(context.Background(), "dev-rack"); err != nil || id != newID {
		t.Fatalf("dev-rack by name: %s %v, want %s", id, err, newID)
	}
	retired, err := d.racks("?retired=true")
	if err != nil || len(retired) != 1 || retired[0].ID != old[0].ID || retired[0].RetiredBy != devActor {
		t.Fatalf("retired racks: %+v %v", retired, err)
	}

	// The earlier dev's secrets no longer work.
	if code := d.status(oldToken, "/api/v1/racks"); code != 401 {
		t.Errorf("the earlier dev's API token: %d, want 401", code)
	}
	var joins struct {
		JoinTokens []struct {
			ID        string
			RevokedAt *time.Time `json:"revoked_at"`
		} `json:"join_tokens"`
	}
	if _, err := d.get("/api/v1/join-tokens", &joins); err != nil {
		t.Fatal(err)
	}
	oldJoinID := secretID(strings.TrimSpace(string(oldJoin)), "rpj_")
	for _, jt := range joins.JoinTokens {
		if jt.ID == oldJoinID && jt.RevokedAt == nil {
			t.Errorf("the earlier dev's join token %s is not revoked", jt.ID)
		}
	}
	// dev records what it did in the audit log, as the API would have.
	regiontest.Eventually(t, 10*time.Second, "the audit log of "+devActor, func() error {
		var audit struct {
			Entries []struct{ Actor, Action, Target string }
		}
		if _, err := d.get("/api/v1/audit?actor="+devActor, &audit); err != nil {
			return err
		}
		var did []string
		for _, e := range audit.Entries {
			did = append(did, e.Action+" "+e.Target)
		}
		for _, want := range []string{"DELETE /api/v1/racks/{id} " + events.RackStreamName(old[0].ID), "DELETE /api/v1/tokens/{id}", "DELETE /api/v1/join-tokens/{id}"} {
			if !strings.Contains(strings.Join(did, "\n"), want) {
				return fmt.Errorf("no %q in %v", want, did)
			}
		}
		return nil
	})

	// The README's commands: the racks, an image import into the first
	// rack listed (the rack answers: no 503).
	if out, err := d.rackplane([]string{"racks"}); err != nil || strings.Count(out, "dev-rack") != 1 || !strings.Contains(out, "online") {
		t.Errorf("rackplane racks: %v\n%s", err, out)
	}
	mirror := httptest.NewServer(http.FileServer(http.Dir(simplestreamsMirror(t))))
	t.Cleanup(mirror.Close)
	if out, err := d.rackplane([]string{"images", "import"}, rs[0].ID, "simplestreams:"+mirror.URL+"/", "-release", "noble"); err != nil || !strings.Contains(out, "succeeded") {
		t.Fatalf("images import into the first rack listed: %v\n%s", err, out)
	}
	// The running rack is not retired.
	if out, err := d.rackplane([]string{"racks", "retire"}, "dev-rack"); err == nil || !strings.Contains(err.Error(), "stop its rackd first") {
		t.Errorf("racks retire of the running rack: %v\n%s", err, out)
	}
}

// TestRacksRetire retires a rack with the CLI on `rackplane dev` as it
// runs by default (NATS secured by the region's callout): a name two racks
// share is refused with both ids and states, the online one is refused,
// the offline one is retired, leaves the list and, started again, is
// refused by NATS.
func TestRacksRetire(t *testing.T) {
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	twin := func(dir string) (*rackd.Rack, error) {
		cfg := rack.DefaultConfig()
		cfg.DataDir, cfg.Name, cfg.HTTPAddr, cfg.TFTPAddrs = dir, "twin", "127.0.0.1:0", nil
		cfg.ImportSystemBootloaders, cfg.HeartbeatInterval = false, 200*time.Millisecond
		nc := dial.DefaultNATSConfig()
		nc.URL = "nats://" + d.nat
		return rackd.New(context.Background(), cfg, nc, rackd.NATSAuthConfig{JoinTokenFile: filepath.Join(d.dataDir, "join-token")}, regiontest.Logger())
	}
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a, err := twin(dirA)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	regiontest.Run(t, a.Run)
	b, err := twin(dirB)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopB := context.WithCancel(context.Background())
	doneB := make(chan struct{})
	go func() { _ = b.Run(ctx); b.Close(); close(doneB) }()
	regiontest.Eventually(t, 30*time.Second, "both twins online", func() error {
		rs, err := d.racks("")
		if err != nil {
			return err
		}
		n := 0
		for _, r := range rs {
			if r.Name == "twin" && r.Online {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("racks %+v", rs)
		}
		return nil
	})
	stopB()
	<-doneB
	regiontest.Eventually(t, 30*time.Second, "twin b offline", func() error {
		r, err := d.rackByID(b.ID())
		if err != nil || r.Online {
			return fmt.Errorf("%+v %v", r, err)
		}
		return nil
	})

	out, err := d.rackplane([]string{"racks", "retire"}, "twin")
	if err == nil || !strings.Contains(err.Error(), `2 racks are named "twin"; give the id of the one you mean: `+a.ID()+" (online); "+b.ID()+" (offline, last seen ") {
		t.Fatalf("retire a name two racks share: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"racks", "retire"}, a.ID()); err == nil || !strings.Contains(err.Error(), "stop its rackd first") ||
		!strings.Contains(err.Error(), "409 Conflict") {
		t.Fatalf("retire the online twin: %v\n%s", err, out)
	}
	out, err = d.rackplane([]string{"racks", "retire"}, b.ID(), "-reason", "moved to the new room")
	if err != nil || !strings.Contains(out, "rack twin ("+b.ID()+") retired; its NATS credential (nkey U") {
		t.Fatalf("retire the offline twin: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"racks"}); err != nil || strings.Contains(out, b.ID()) || !strings.Contains(out, a.ID()) {
		t.Errorf("racks after the retirement: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"racks"}, "-retired"); err != nil || !strings.Contains(out, b.ID()) || !strings.Contains(out, "retired") {
		t.Errorf("racks -retired: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"racks", "retire"}, b.ID()); err != nil || !strings.Contains(out, "was retired already") {
		t.Errorf("retire it again: %v\n%s", err, out)
	}

	// Started again from its data directory, it is refused by NATS.
	refusedBefore := d.metric(`rackplane_region_nats_auth_refused_total{reason="rack_revoked"}`)
	if again, err := twin(dirB); err == nil {
		defer again.Close()
		regiontest.Run(t, again.Run)
	}
	regiontest.Eventually(t, 30*time.Second, "the retired rack refused", func() error {
		if got := d.metric(`rackplane_region_nats_auth_refused_total{reason="rack_revoked"}`); got == refusedBefore || got == "absent" {
			return fmt.Errorf("refused_total{rack_revoked} %s", got)
		}
		return nil
	})
	if r, err := d.rackByID(b.ID()); err != nil || r.Online || r.RetiredAt == nil {
		t.Errorf("the retired rack: %+v %v", r, err)
	}
}

// rackByID is GET /api/v1/racks/{id}.
func (d *devSystem) rackByID(id string) (rackplane.Rack, error) {
	var r rackplane.Rack
	code, err := d.get("/api/v1/racks/"+id, &r)
	if err == nil && code != 200 {
		err = errors.New("GET /api/v1/racks/" + id + ": " + fmt.Sprint(code))
	}
	return r, err
}
