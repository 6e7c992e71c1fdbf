package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestAdmitRackRace: connections claiming one new rack id with different
// keys at once, all with a valid join token: one binds the id, every
// other is refused for its key, and the log has one rack_joined.
func TestAdmitRackRace(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	_, tok, err := db.CreateJoinToken(ctx, time.Hour, "tester", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rack := uuid.NewString()
	const n = 8
	var wg sync.WaitGroup
	joined, mismatched := make(chan string, n), make(chan struct{}, n)
	for range n {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := db.AdmitRack(ctx, rack, pub, tok, time.Now())
			var refused *postgres.RackRefused
			switch {
			case ok && err == nil:
				joined <- pub
			case errors.As(err, &refused) && refused.Reason == postgres.RefusedKeyMismatch:
				mismatched <- struct{}{}
			default:
				t.Errorf("admit: joined %v, %v", ok, err)
			}
		}()
	}
	wg.Wait()
	if len(joined) != 1 || len(mismatched) != n-1 {
		t.Fatalf("%d joined, %d refused for their key; want 1 and %d", len(joined), len(mismatched), n-1)
	}
	winner := <-joined
	if c, err := db.GetRackCredential(ctx, rack); err != nil || c.NKey != winner {
		t.Fatalf("credential %+v %v, want bound to %s", c, err, winner)
	}
	if evs := regiontest.StreamEvents(t, db, events.RackStreamName(rack)); len(evs) != 1 || evs[0].Type != events.TypeRackJoined {
		t.Fatalf("rack stream %+v, want one rack_joined", evs)
	}
}

// TestFirstJoinTokenOnce: regions starting together make one first join
// token between them, and none once any was made.
func TestFirstJoinTokenOnce(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	var wg sync.WaitGroup
	made := make(chan string, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, plain, created, err := db.CreateFirstJoinToken(ctx, time.Hour, "region", time.Now())
			if err != nil {
				t.Error(err)
			}
			if created {
				made <- plain
			}
		}()
	}
	wg.Wait()
	if len(made) != 1 {
		t.Fatalf("%d first join tokens made, want 1", len(made))
	}
	if ok, err := db.JoinTokenValid(ctx, <-made, time.Now()); !ok || err != nil {
		t.Fatalf("the first join token is not valid: %v %v", ok, err)
	}
	ts, err := db.ListJoinTokens(ctx)
	if err != nil || len(ts) != 1 {
		t.Fatalf("join tokens %+v %v", ts, err)
	}
	if _, err := db.RevokeJoinToken(ctx, ts[0].ID, "tester", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, created, err := db.CreateFirstJoinToken(ctx, time.Hour, "region", time.Now()); created || err != nil {
		t.Fatalf("a first join token made again after one was revoked: %v %v", created, err)
	}
}
