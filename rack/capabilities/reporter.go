package capabilities

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/images"
)

// Images is what the reporter needs of the image store.
type Images interface {
	Capabilities() images.Capabilities
}

// Publisher sends events.
type Publisher interface {
	Publish(events.Event)
}

// Config configures a Reporter.
type Config struct {
	RackID  string
	Catalog Catalog
	Images  Images                          // nil: no images
	Storage func() []events.StorageProvider // nil: no providers
	Power   func() []events.PowerDriver     // nil: no power drivers
	// PowerPollInterval is how often the region is to poll the power of
	// the machines the rack drives (0: never).
	PowerPollInterval time.Duration
	// PreseedDir holds the default preseeds the rack ships (*.preseed).
	PreseedDir string
	Publisher  Publisher
	// Debounce collects bursts of changes (an import finishing many
	// versions) into one snapshot.
	Debounce time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// Reporter publishes the rack's capability snapshot.
type Reporter struct {
	cfg     Config
	log     *slog.Logger
	changed chan struct{}

	mu        sync.Mutex
	published string // digest of the last snapshot published
	// The encoded snapshot answers live queries until something changes
	// or it is older than maxCacheAge: a scatter-gather to every rack must
	// not make each of them rebuild and rehash its snapshot.
	cached   json.RawMessage
	cachedAt time.Time
}

const maxCacheAge = time.Second

// New returns a reporter.
func New(cfg Config) *Reporter {
	if cfg.Catalog == nil {
		cfg.Catalog = DefaultCatalog()
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 200 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Reporter{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}, 1)}
}

// Changed tells the reporter that what the rack has may have changed. It
// never blocks.
func (r *Reporter) Changed() {
	r.mu.Lock()
	r.cached = nil
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Describe sets the services the snapshot describes, for when they are
// opened after the reporter (they need its Changed as their hook).
func (r *Reporter) Describe(images Images, storage func() []events.StorageProvider, power func() []events.PowerDriver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Images, r.cfg.Storage, r.cfg.Power = images, storage, power
	r.cached = nil
}

// snapshotJSON returns the encoded snapshot, from the cache when fresh.
func (r *Reporter) snapshotJSON() (json.RawMessage, error) {
	r.mu.Lock()
	if r.cached != nil && r.cfg.Now().Sub(r.cachedAt) < maxCacheAge {
		c := r.cached
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()
	b, err := json.Marshal(r.Snapshot())
	if err != nil {
		return nil, fmt.Errorf("encode capabilities: %w", err)
	}
	r.mu.Lock()
	r.cached, r.cachedAt = b, r.cfg.Now()
	r.mu.Unlock()
	return b, nil
}

// Snapshot computes the current capabilities.
func (r *Reporter) Snapshot() events.Capabilities {
	r.mu.Lock()
	imgs, stor, power := r.cfg.Images, r.cfg.Storage, r.cfg.Power
	r.mu.Unlock()
	c := events.Capabilities{OSes: []events.OS{}, Bootloaders: []events.Bootloader{}, StorageProviders: []events.StorageProvider{}}
	if imgs != nil {
		ic := imgs.Capabilities()
		c.OSes = r.oses(ic)
		c.Bootloaders = bootloaders(ic)
	}
	if stor != nil {
		if ps := stor(); ps != nil {
			c.StorageProviders = ps
		}
	}
	if power != nil {
		c.PowerDrivers = power()
		c.PowerPollIntervalSeconds = int64(r.cfg.PowerPollInterval / time.Second)
	}
	ps, errs := ReadPreseeds(r.cfg.PreseedDir)
	for _, err := range errs {
		r.log.Warn("default preseed not shipped", "err", err)
	}
	c.Preseeds = ps
	c.Digest = Digest(c)
	return c
}

func (r *Reporter) oses(ic images.Capabilities) []events.OS {
	out := []events.OS{}
	for _, osName := range sortedKeys(ic.OS) {
		info := r.cfg.Catalog.os(osName)
		o := events.OS{Name: osName, Title: info.Title, Releases: []events.Release{}}
		for _, relName := range sortedKeys(ic.OS[osName]) {
			ri := info.release(relName)
			rel := events.Release{Name: relName, Title: ri.Title, Default: ri.Default,
				RequiresLicenceKey: ri.RequiresLicenceKey, CanCommission: ri.CanCommission, Arches: []events.Arch{}}
			for _, key := range sortedKeys(ic.OS[osName][relName]) {
				arch, subarch, _ := strings.Cut(key, "/")
				a := events.Arch{Arch: arch, Subarch: subarch, Versions: []events.ImageVersion{}}
				for _, v := range ic.OS[osName][relName][key] {
					a.Versions = append(a.Versions, events.ImageVersion{ID: v.ID, Label: v.Label, Version: v.Version, Files: v.Files,
						Installer: v.Installer, Disk: v.Disk})
				}
				rel.Arches = append(rel.Arches, a)
			}
			o.Releases = append(o.Releases, rel)
		}
		out = append(out, o)
	}
	return out
}

func bootloaders(ic images.Capabilities) []events.Bootloader {
	out := []events.Bootloader{}
	for _, name := range sortedKeys(ic.Bootloaders) {
		for _, arch := range sortedKeys(ic.Bootloaders[name]) {
			for _, v := range ic.Bootloaders[name][arch] {
				out = append(out, events.Bootloader{Name: name, Arch: arch, Version: v.Version, Files: v.Files})
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Digest is the sha256 of the canonical JSON of c without its digest, as
// capabilities.v1.json defines it: object keys sorted at every level, no
// whitespace, strings escaped only where JSON requires it, numbers as
// written. A rack in another language computes the same digest for the
// same content, so digests can be compared across implementations.
func Digest(c events.Capabilities) string {
	c.Digest = ""
	b, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	canon, err := Canonical(b)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}

// Canonical rewrites the JSON object b in canonical form, leaving out its
// "digest" member.
func Canonical(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 1000000 stays 1000000, not 1e+06
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	delete(v, "digest")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Go escapes <, > and & by default; JSON does not need it and other
	// implementations do not do it.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Run publishes the snapshot at start and after every change that alters
// it, until ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	r.publish(true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.changed:
		}
		select { // let a burst of changes settle
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.Debounce):
		}
		r.publish(false)
	}
}

// Republish sends the current snapshot even when it did not change, as
// after a reconnect to NATS.
func (r *Reporter) Republish() { r.publish(true) }

func (r *Reporter) publish(always bool) {
	snap := r.Snapshot()
	r.mu.Lock()
	same := snap.Digest == r.published
	r.published = snap.Digest
	r.mu.Unlock()
	if same && !always {
		return
	}
	ev, err := events.New(events.RackSource(r.cfg.RackID), events.TypeCapabilitiesReported,
		events.RackStreamName(r.cfg.RackID), r.cfg.Now(), snap)
	if err != nil {
		r.log.Error("build capability snapshot event", "err", err)
		return
	}
	r.cfg.Publisher.Publish(ev)
	r.log.Info("capabilities reported", "digest", snap.Digest, "oses", len(snap.OSes), "bootloaders", len(snap.Bootloaders),
		"storage_providers", len(snap.StorageProviders), "power_drivers", len(snap.PowerDrivers))
}

// LicenceKeyRequest is the body of the validate_licence_key rpc.
type LicenceKeyRequest struct {
	OS      string `json:"os"`
	Release string `json:"release"`
	Key     string `json:"key"`
}

// LicenceKeyResult is its answer.
type LicenceKeyResult struct {
	Valid  bool   `json:"valid"`
	Reason string `json:"reason,omitempty"`
}

// ValidateLicenceKey checks key for os/release: the rack must provide the
// release, the release must take a key, and the key must look like one.
func (r *Reporter) ValidateLicenceKey(req LicenceKeyRequest) (LicenceKeyResult, error) {
	snap := r.Snapshot()
	var rel *events.Release
	for i := range snap.OSes {
		if snap.OSes[i].Name != req.OS {
			continue
		}
		for j := range snap.OSes[i].Releases {
			if snap.OSes[i].Releases[j].Name == req.Release {
				rel = &snap.OSes[i].Releases[j]
			}
		}
	}
	if rel == nil {
		return LicenceKeyResult{}, rackplane.Errorf(rackplane.ENOTFOUND, "this rack does not provide %s/%s", req.OS, req.Release)
	}
	if !rel.RequiresLicenceKey {
		return LicenceKeyResult{}, rackplane.Errorf(rackplane.EINVALID, "%s/%s takes no licence key", req.OS, req.Release)
	}
	key := strings.TrimSpace(req.Key)
	if p := r.cfg.Catalog.os(req.OS).KeyPattern; p != nil && !p.MatchString(key) {
		return LicenceKeyResult{Valid: false, Reason: fmt.Sprintf("not a %s key: want five groups of five letters or digits, like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX", req.OS)}, nil
	}
	if key == "" {
		return LicenceKeyResult{Valid: false, Reason: "the key is empty"}, nil
	}
	return LicenceKeyResult{Valid: true}, nil
}

// RegisterRPC answers capabilities and validate_licence_key on the rack's
// own subjects.
func (r *Reporter) RegisterRPC(srv *rpc.Server, rackID string) error {
	snapshot := func(context.Context, []byte) (any, error) { return r.snapshotJSON() }
	if err := srv.Handle(events.RackRPCSubject(rackID, events.MethodCapabilities), "", snapshot); err != nil {
		return err
	}
	return srv.Handle(events.RackRPCSubject(rackID, events.MethodValidateLicenceKey), "", func(_ context.Context, data []byte) (any, error) {
		var req LicenceKeyRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "validate_licence_key: %v", err)
		}
		return r.ValidateLicenceKey(req)
	})
}
