package ingest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
)

// msg is a message of which the lanes read only the subject.
type msg struct {
	jetstream.Msg
	subject, name string
}

func (m msg) Subject() string { return m.subject }

// TestLanesHoldARacksLaterMessagesBack: a batch takes each lane's
// messages in the order they were read, oldest lanes first; while it
// holds a lane, a later batch takes no message of it, even one older than
// those it takes; released, the lane's next message goes in the next
// batch.
func TestLanesHoldARacksLaterMessagesBack(t *testing.T) {
	ctx := context.Background()
	rackA := uuid.NewString()
	rackB := uuid.NewString()
	for laneOf(events.RackEventSubject(rackB, events.TypeEventsDropped)) == laneOf(events.RackEventSubject(rackA, events.TypeEventsDropped)) {
		rackB = uuid.NewString()
	}
	l := newLanes(2, time.Hour) // batches close full, or once the lanes are closed
	t0 := time.Now()
	push := func(rack, name string, at time.Duration) {
		l.push(arrival{msg{subject: events.RackEventSubject(rack, events.TypeEventsDropped), name: name}, t0.Add(at)})
	}
	names := func(buf []arrival) []string {
		var out []string
		for _, a := range buf {
			out = append(out, a.msg.(msg).name)
		}
		return out
	}
	push(rackA, "a1", 1)
	push(rackA, "a2", 2)
	push(rackA, "a3", 3)
	push(rackB, "b1", 4)
	first, heldA, ok := l.form(ctx, nil, nil)
	if got := names(first); !ok || !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("first batch %v, want a1 a2", got)
	}
	push(rackB, "b2", 5)
	second, heldB, ok := l.form(ctx, nil, nil)
	if got := names(second); !ok || !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("second batch %v, want b1 b2 (a3 waits for the first batch)", got)
	}
	l.release(heldA)
	l.release(heldB)
	l.close()
	third, _, ok := l.form(ctx, nil, nil)
	if got := names(third); !ok || !slices.Equal(got, []string{"a3"}) {
		t.Fatalf("third batch %v, want a3", got)
	}
	if _, _, ok := l.form(ctx, nil, nil); ok {
		t.Fatal("a batch formed of lanes closed and empty")
	}
}
