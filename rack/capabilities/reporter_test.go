package capabilities_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/capabilities"
	"github.com/rackplane/rackplane/rack/images"
)

type collect struct {
	mu  sync.Mutex
	evs []events.Event
}

func (c *collect) Publish(e events.Event) { c.mu.Lock(); c.evs = append(c.evs, e); c.mu.Unlock() }
func (c *collect) len() int               { c.mu.Lock(); defer c.mu.Unlock(); return len(c.evs) }

type mutableImages struct {
	mu sync.Mutex
	c  images.Capabilities
}

func (m *mutableImages) Capabilities() images.Capabilities {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c
}

func TestSnapshotPublishedOnStartAndOnChangeOnly(t *testing.T) {
	pub := &collect{}
	imgs := &mutableImages{c: images.Capabilities(someImages(1))}
	rackID := uuid.NewString()
	rep := capabilities.New(capabilities.Config{RackID: rackID, Images: imgs, Publisher: pub, Debounce: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Storage: func() []events.StorageProvider {
			return []events.StorageProvider{{Name: "nfs", Valid: true, Parameters: []events.StorageParameter{{Name: "server", Description: "host"}}}}
		},
		Power: func() []events.PowerDriver {
			return []events.PowerDriver{
				{Name: "ipmi", Kind: events.PowerDriverBuiltin, Available: true, Detail: "ipmitool version 1.8.19", Actions: events.PowerActions},
				{Name: "apc-pdu", Kind: events.PowerDriverScript, Detail: "/etc/rackplane/power/apc-pdu: power-status is missing",
					Actions: []events.PowerAction{events.PowerOn, events.PowerCycle}},
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rep.Run(ctx)
	waitFor(t, func() bool { return pub.len() == 1 })
	rep.Changed() // nothing changed: nothing published
	time.Sleep(50 * time.Millisecond)
	if pub.len() != 1 {
		t.Fatalf("published %d snapshots after a change that changed nothing", pub.len())
	}
	imgs.mu.Lock()
	imgs.c = images.Capabilities(someImages(2))
	imgs.mu.Unlock()
	rep.Changed()
	waitFor(t, func() bool { return pub.len() == 2 })

	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, e := range pub.evs {
		if err := v.Validate(e); err != nil {
			t.Fatalf("emitted snapshot does not validate: %v", err)
		}
		var c events.Capabilities
		_ = e.DecodeData(&c)
		if c.Digest != capabilities.Digest(c) || len(c.StorageProviders) != 1 || len(c.PowerDrivers) != 2 || len(c.OSes) != 1 || len(c.OSes[0].Releases) != 3 {
			t.Fatalf("snapshot content: %+v", c)
		}
		digests = append(digests, c.Digest)
	}
	if digests[0] == digests[1] {
		t.Fatalf("different content, same digest")
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if f() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met in 2s")
}

func TestValidateLicenceKey(t *testing.T) {
	win := images.Capabilities{OS: map[string]map[string]map[string][]images.CapabilityVersion{
		"windows": {"win2022": {"amd64/generic": {{ID: "windows/amd64/generic/win2022/stable/1", Label: "stable", Version: "1"}}}},
		"ubuntu":  {"noble": {"amd64/generic": {{ID: "ubuntu/amd64/generic/noble/stable/1", Label: "stable", Version: "1"}}}},
	}}
	rep := capabilities.New(capabilities.Config{RackID: uuid.NewString(), Images: staticImages(win)})
	tests := []struct {
		name  string
		req   capabilities.LicenceKeyRequest
		valid bool
		code  string
	}{
		{"good key", capabilities.LicenceKeyRequest{OS: "windows", Release: "win2022", Key: "ABCDE-12345-FGHIJ-67890-KLMNO"}, true, ""},
		{"lower case", capabilities.LicenceKeyRequest{OS: "windows", Release: "win2022", Key: "abcde-12345-fghij-67890-klmno"}, false, ""},
		{"short", capabilities.LicenceKeyRequest{OS: "windows", Release: "win2022", Key: "ABCDE-12345"}, false, ""},
		{"release not here", capabilities.LicenceKeyRequest{OS: "windows", Release: "win2019", Key: "ABCDE-12345-FGHIJ-67890-KLMNO"}, false, rackplane.ENOTFOUND},
		{"release takes none", capabilities.LicenceKeyRequest{OS: "ubuntu", Release: "noble", Key: "x"}, false, rackplane.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := rep.ValidateLicenceKey(tt.req)
			if tt.code != "" {
				if rackplane.ErrorCode(err) != tt.code {
					t.Fatalf("err %v, want code %s", err, tt.code)
				}
				return
			}
			if err != nil || res.Valid != tt.valid || (!res.Valid && res.Reason == "") {
				t.Fatalf("got %+v %v, want valid=%v", res, err, tt.valid)
			}
		})
	}
}
