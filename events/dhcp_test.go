package events_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

func dhcpEvent(t *testing.T, data any) []byte {
	t.Helper()
	rack := uuid.NewString()
	e, err := events.New(events.RackSource(rack), events.TypeDHCPLeasesChanged, events.RackStreamName(rack), time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestDHCPLeasesChangedSchema checks the Go type against its schema file:
// what the rack emits validates, and what breaks the contract does not.
func TestDHCPLeasesChangedSchema(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	until := now.Add(time.Hour)
	good := events.DHCPLeasesChanged{
		Mode: "managed", Since: now.Add(-10 * time.Second), Until: now,
		Changes: []events.DHCPLeaseChange{
			{Action: events.DHCPAcked, MAC: "52:54:00:12:34:56", IP: "10.20.0.100", Subnet: "10.20.0.0/24", Hostname: "node1",
				Expires: &until, BootFile: "undionly.kpxe", Count: 2, At: now},
			{Action: events.DHCPBootOffered, MAC: "52:54:00:12:34:57", BootFile: "http://10.20.0.2:5248/ipxe/52-54-00-12-34-57.ipxe", Count: 1, At: now},
		},
		MoreChanges: 3, Ignored: map[string]int64{"not_netboot": 7}, Malformed: 1,
	}
	if _, err := v.Decode(dhcpEvent(t, good)); err != nil {
		t.Fatalf("a good event is refused: %v", err)
	}
	if _, err := v.Decode(dhcpEvent(t, events.DHCPLeasesChanged{Mode: "proxy", Since: now, Until: now})); err != nil {
		t.Fatalf("the smallest event is refused: %v", err)
	}
	mutate := func(f func(m map[string]any)) any {
		raw, _ := json.Marshal(good)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		f(m)
		return m
	}
	change := func(f func(c map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { f(m["changes"].([]any)[0].(map[string]any)) }
	}
	bad := map[string]any{
		"unknown mode":       mutate(func(m map[string]any) { m["mode"] = "off" }),
		"no since":           mutate(func(m map[string]any) { delete(m, "since") }),
		"unknown action":     mutate(change(func(c map[string]any) { c["action"] = "stolen" })),
		"MAC not canonical":  mutate(change(func(c map[string]any) { c["mac"] = "52-54-00-12-34-56" })),
		"IP not IPv4":        mutate(change(func(c map[string]any) { c["ip"] = "::1" })),
		"zero count":         mutate(change(func(c map[string]any) { c["count"] = 0 })),
		"extra change field": mutate(change(func(c map[string]any) { c["packet"] = "AAAA" })),
		"ignored reason":     mutate(func(m map[string]any) { m["ignored"] = map[string]any{"Bad Reason": 1} }),
		"extra data field":   mutate(func(m map[string]any) { m["per_packet"] = []any{} }),
	}
	for name, data := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := v.Decode(dhcpEvent(t, data))
			var re *events.RejectError
			if !errors.As(err, &re) || re.Reason != events.ReasonSchema {
				t.Fatalf("err = %v, want a schema rejection", err)
			}
		})
	}
}
