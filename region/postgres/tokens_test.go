package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestAuthenticate: only the right secret of a live token is accepted and
// moves its last_used_at, once its use is written (a check itself writes
// nothing); every other token refused leaves it alone, and
// an unknown id costs the same hash comparison as a wrong secret (one
// each), so what is refused cannot be told apart by the work done.
func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(db.Collectors()...)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	live, livePlain, err := db.CreateToken(ctx, "ci", "ci-bot", "test", t0)
	if err != nil {
		t.Fatal(err)
	}
	gone, gonePlain, err := db.CreateToken(ctx, "old", "ci-bot", "test", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeToken(ctx, gone.ID, "test", t0); err != nil {
		t.Fatal(err)
	}
	// Tokens are rp_<32 hex id>_<64 hex secret>.
	idPart := livePlain[:len("rp_")+32]
	secretPart := livePlain[len(idPart)+1:]
	flipped := "0"
	if secretPart[0] == '0' {
		flipped = "1"
	}
	unknownID := "rp_" + strings.ReplaceAll(uuid.NewString(), "-", "")

	lastUsed := func(id string) *time.Time {
		t.Helper()
		for _, tok := range mustList(t, db) {
			if tok.ID == id {
				return tok.LastUsedAt
			}
		}
		t.Fatalf("no token %s", id)
		return nil
	}
	for i, tt := range []struct {
		name     string
		plain    string
		ok       bool
		outcome  string
		compares int64
	}{
		{"wrong secret on a live token's id", idPart + "_" + flipped + secretPart[1:], false, "wrong_secret", 1},
		{"secret of another length", idPart + "_" + secretPart[:10], false, "wrong_secret", 1},
		{"unknown id", unknownID + "_" + secretPart, false, "unknown_token", 1},
		{"right secret of a revoked token", gonePlain, false, "revoked", 1},
		{"not a token", "hello", false, "malformed", 0},
		{"id not hex", "rp_" + strings.Repeat("z", 32) + "_" + secretPart, false, "malformed", 0},
		{"right secret", livePlain, true, "accepted", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := postgres.HashCompares(db)
			outcomes := metrictest.Value(t, reg, "rackplane_region_api_token_checks_total", map[string]string{"outcome": tt.outcome})
			at := t0.Add(time.Duration(i+1) * time.Hour)
			tok, err := db.Authenticate(ctx, tt.plain, at)
			if tt.ok != (err == nil) || !tt.ok && rackplane.ErrorCode(err) != rackplane.EUNAUTHORIZED {
				t.Fatalf("authenticate: %+v %v", tok, err)
			}
			if n := postgres.HashCompares(db) - before; n != tt.compares {
				t.Errorf("%d hash comparisons, want %d", n, tt.compares)
			}
			if n := metrictest.Value(t, reg, "rackplane_region_api_token_checks_total", map[string]string{"outcome": tt.outcome}) - outcomes; n != 1 {
				t.Errorf("outcome %s counted %v times", tt.outcome, n)
			}
			for id := range map[string]bool{live.ID: true, gone.ID: true} {
				if got := lastUsed(id); got != nil {
					t.Errorf("token %s last used %v before its uses were written", id, got)
				}
			}
			if err := db.TokenUses().Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for id, want := range map[string]*time.Time{live.ID: nil, gone.ID: nil} {
				if tt.ok && id == live.ID {
					want = &at
				}
				if got := lastUsed(id); (got == nil) != (want == nil) || got != nil && !got.Equal(*want) {
					t.Errorf("token %s last used %v, want %v", id, got, want)
				}
			}
		})
	}
}

// TestTokenUses: uses are written every interval of the recorder's clock
// and when it stops, in one statement for every token, the latest use of
// each; a later write never moves a use back; a token revoked after a
// use is refused at its next check.
func TestTokenUses(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	a, aPlain, err := db.CreateToken(ctx, "a", "ci-bot", "test", t0)
	if err != nil {
		t.Fatal(err)
	}
	b, bPlain, err := db.CreateToken(ctx, "b", "ci-bot", "test", t0)
	if err != nil {
		t.Fatal(err)
	}
	auth := func(plain string, at time.Time) error {
		t.Helper()
		_, err := db.Authenticate(ctx, plain, at)
		return err
	}
	lastUsed := func(id string) *time.Time {
		t.Helper()
		for _, tok := range mustList(t, db) {
			if tok.ID == id {
				return tok.LastUsedAt
			}
		}
		t.Fatalf("no token %s", id)
		return nil
	}
	same := func(got *time.Time, want time.Time) bool { return got != nil && got.Equal(want) }

	ticks := make(chan time.Time)
	waits := make(chan time.Duration, 10)
	postgres.SetTokenUseClock(db.TokenUses(), func(d time.Duration) <-chan time.Time {
		waits <- d
		return ticks
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- db.TokenUses().Run(runCtx) }()
	if d := <-waits; d != postgres.TokenUseFlushInterval {
		t.Fatalf("waits %s, want %s", d, postgres.TokenUseFlushInterval)
	}

	// Uses out of order: the latest of each token is written.
	for _, u := range []struct {
		plain string
		at    time.Duration
	}{{aPlain, 3 * time.Minute}, {aPlain, time.Minute}, {bPlain, 2 * time.Minute}} {
		if err := auth(u.plain, t0.Add(u.at)); err != nil {
			t.Fatal(err)
		}
	}
	if n := db.TokenUses().Pending(); n != 2 {
		t.Fatalf("%d tokens pending, want 2", n)
	}
	if lastUsed(a.ID) != nil || lastUsed(b.ID) != nil {
		t.Fatal("a check wrote its use")
	}
	ticks <- t0
	<-waits // the next wait begins after the write
	if got := lastUsed(a.ID); !same(got, t0.Add(3*time.Minute)) {
		t.Errorf("a last used %v, want %v", got, t0.Add(3*time.Minute))
	}
	if got := lastUsed(b.ID); !same(got, t0.Add(2*time.Minute)) {
		t.Errorf("b last used %v, want %v", got, t0.Add(2*time.Minute))
	}

	// An earlier use (another instance's clock) does not move it back.
	if err := auth(aPlain, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ticks <- t0
	<-waits
	if got := lastUsed(a.ID); !same(got, t0.Add(3*time.Minute)) {
		t.Errorf("a last used %v after an earlier use, want %v", got, t0.Add(3*time.Minute))
	}

	// Revoked after a use: refused at its next check, the use it had
	// before still recorded.
	if err := auth(bPlain, t0.Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeToken(ctx, b.ID, "test", t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := auth(bPlain, t0.Add(6*time.Minute)); rackplane.ErrorCode(err) != rackplane.EUNAUTHORIZED {
		t.Fatalf("revoked token: %v", err)
	}

	// Stopping writes what is left, then Run returns.
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(b.ID); !same(got, t0.Add(4*time.Minute)) {
		t.Errorf("b last used %v after the stop, want %v", got, t0.Add(4*time.Minute))
	}
	if n := db.TokenUses().Pending(); n != 0 {
		t.Errorf("%d tokens pending after the stop", n)
	}
}

func mustList(t *testing.T, db *postgres.DB) []postgres.Token {
	t.Helper()
	ts, err := db.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// BenchmarkAuthenticateRefused times the refusals an attacker can time:
// an unknown id and a known id with a wrong secret do the same work (one
// indexed read, one hash, one comparison). Run with
// -bench AuthenticateRefused -benchtime 2000x and compare ns/op.
func BenchmarkAuthenticateRefused(b *testing.B) {
	ctx := context.Background()
	db := regiontest.DB(b)
	_, plain, err := db.CreateToken(ctx, "ci", "ci-bot", "test", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	idPart := plain[:len("rp_")+32]
	secret := strings.Repeat("0", 64)
	for _, bc := range []struct{ name, plain string }{
		{"unknown_id", "rp_" + strings.ReplaceAll(uuid.NewString(), "-", "") + "_" + secret},
		{"wrong_secret", idPart + "_" + secret},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := db.Authenticate(ctx, bc.plain, time.Now()); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
