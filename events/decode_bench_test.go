package events_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

// BenchmarkDecode measures decoding and validating one rack event from the
// wire, the region's cost per ingested event.
func BenchmarkDecode(b *testing.B) {
	v, err := events.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	rack := uuid.NewString()
	e, err := events.New(events.RackSource(rack), events.TypeEventsDropped, events.RackStreamName(rack), time.Now(),
		events.EventsDropped{Count: 3, Since: time.Now().UTC(), Types: map[string]int64{events.TypeBootTransfer: 3}})
	if err != nil {
		b.Fatal(err)
	}
	raw, err := events.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := v.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}
