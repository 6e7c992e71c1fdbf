package osregistry

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/secrets"
	"github.com/rackplane/rackplane/schema"
)

// Store is what the registry needs of the region's database. The region's
// postgres package implements it.
type Store interface {
	ListRacks(ctx context.Context) ([]rackplane.Rack, error)
	GetRack(ctx context.Context, id string) (rackplane.Rack, error)
	ListImages(ctx context.Context, f postgres.ImageFilter) ([]postgres.ImageOnRack, error)
	GetRackCapabilities(ctx context.Context, rackID string) (postgres.RackCapabilities, error)
	// CapabilityDigests is the digest of each rack's last snapshot.
	CapabilityDigests(ctx context.Context) (map[string]string, error)
	RecordDivergence(ctx context.Context, ev events.Event) error
	LicenceKeys(ctx context.Context) (map[[2]string]postgres.LicenceKey, error)
	SetLicenceKey(ctx context.Context, sealed secrets.Secret, ev events.Event) error
}

// Service answers the registry's questions from the Store, or live from
// the racks over NATS.
type Service struct {
	store Store
	nc    *nats.Conn
	keys  *secrets.Keyring
	now   func() time.Time
	log   *slog.Logger
}

// New returns a registry on store that asks racks over nc and seals
// licence keys with keys. now may be nil (time.Now).
func New(store Store, nc *nats.Conn, keys *secrets.Keyring, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, nc: nc, keys: keys, now: now, log: log}
}

// Query asks for the OS list, narrowed by Filter. Live asks the racks,
// waiting at most Timeout.
type Query struct {
	Filter  postgres.ImageFilter
	Live    bool
	Timeout time.Duration
}

// List answers what can be booted: one entry per os/release/arch/subarch
// with the racks that have it.
func (s *Service) List(ctx context.Context, q Query) (Listing, error) {
	keys, err := s.store.LicenceKeys(ctx)
	if err != nil {
		return Listing{}, err
	}
	if !q.Live {
		imgs, err := s.store.ListImages(ctx, q.Filter)
		if err != nil {
			return Listing{}, err
		}
		return Listing{OSes: group(imgs, keys)}, nil
	}
	res, imgs, err := s.liveOS(ctx, q.Timeout)
	if err != nil {
		return Listing{}, err
	}
	res.OSes = group(filter(imgs, q.Filter), keys)
	return res, nil
}

// liveOS asks every rack at once and merges what answers in time. It never
// waits past timeout; racks expected to answer (the online ones) that did
// not are named.
func (s *Service) liveOS(ctx context.Context, timeout time.Duration) (Listing, []postgres.ImageOnRack, error) {
	racks, err := s.store.ListRacks(ctx)
	if err != nil {
		return Listing{}, nil, err
	}
	names := map[string]string{}
	var expect []string
	ask := map[string]string{}
	for _, rk := range racks {
		names[rk.ID] = rk.Name
		if rk.Online {
			expect = append(expect, rk.ID)
			ask[rk.ID] = events.RackRPCSubject(rk.ID, events.MethodCapabilities)
		}
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Each rack is asked on its own subject, which only it can read, and
	// its answer is known by the request it answers: a rack cannot answer
	// for another.
	g, err := rpc.Gather(gctx, s.nc, ask, struct{}{})
	if err != nil {
		return Listing{}, nil, err
	}
	res := Listing{Live: true, ElapsedMS: g.Elapsed.Milliseconds(), Answered: []RackBrief{}, NotAnswered: []RackBrief{}}
	digests, err := s.store.CapabilityDigests(ctx)
	if err != nil {
		return Listing{}, nil, err
	}
	var imgs []postgres.ImageOnRack
	answered := map[string]bool{}
	for _, rep := range g.Replies {
		caps, err := decodeCapabilities(rep)
		if err != nil {
			s.log.Warn("live capabilities: bad answer", "rack_id", rep.From, "err", err)
			continue
		}
		answered[rep.From] = true
		res.Answered = append(res.Answered, RackBrief{ID: rep.From, Name: names[rep.From]})
		if reported, ok := digests[rep.From]; diverged(reported, ok, caps.Digest) {
			s.recordDivergence(ctx, rep.From, reported, caps.Digest)
		}
		imgs = append(imgs, imagesOf(rep.From, names[rep.From], caps)...)
	}
	for _, id := range expect {
		if !answered[id] {
			res.NotAnswered = append(res.NotAnswered, RackBrief{ID: id, Name: names[id]})
		}
	}
	return res, imgs, nil
}

// RackCapabilities is what a rack offers: its last snapshot, or its live
// answer asked within timeout.
func (s *Service) RackCapabilities(ctx context.Context, id string, live bool, timeout time.Duration) (RackView, error) {
	rack, err := s.store.GetRack(ctx, id)
	if err != nil {
		return RackView{}, err
	}
	if !live {
		rc, err := s.store.GetRackCapabilities(ctx, id)
		if err != nil {
			return RackView{}, err
		}
		return RackView{RackCapabilities: rc, Available: rc.Online}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var raw json.RawMessage
	if err := rpc.Call(cctx, s.nc, events.RackRPCSubject(id, "capabilities"), struct{}{}, &raw); err != nil {
		return RackView{}, err
	}
	caps, err := decodeCapabilities(rpc.Reply{From: id, Result: raw})
	if err != nil {
		return RackView{}, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s answered with invalid capabilities", id)
	}
	v := RackView{RackCapabilities: postgres.RackCapabilities{RackID: id, RackName: rack.Name,
		Online: true, ReportedAt: s.now().UTC(), Capabilities: caps}, Available: true, Live: true}
	if prev, err := s.store.GetRackCapabilities(ctx, id); err == nil {
		match := !diverged(prev.Capabilities.Digest, true, caps.Digest)
		v.MatchesReported = &match
		if !match {
			s.recordDivergence(ctx, id, prev.Capabilities.Digest, caps.Digest)
		}
	}
	return v, nil
}

// decodeCapabilities checks a rack's answer against the contract: it is
// outside input like any other.
func decodeCapabilities(rep rpc.Reply) (events.Capabilities, error) {
	var c events.Capabilities
	if err := rep.Err(); err != nil {
		return c, err
	}
	set, err := schema.Default()
	if err != nil {
		return c, err
	}
	if err := set.ValidateJSON("capabilities.v1", rep.Result); err != nil {
		return c, err
	}
	return c, json.Unmarshal(rep.Result, &c)
}

func (s *Service) recordDivergence(ctx context.Context, rackID, reported, live string) {
	ev, err := events.New(events.RegionSource, events.TypeCapabilitiesDiverged, events.RackStreamName(rackID), s.now(),
		events.CapabilitiesDiverged{RackID: rackID, ReportedDigest: reported, LiveDigest: live})
	if err == nil {
		err = s.store.RecordDivergence(ctx, ev)
	}
	if err != nil {
		s.log.Warn("record capabilities divergence", "rack_id", rackID, "err", err)
		return
	}
	s.log.Warn("rack's live capabilities differ from its last snapshot", "rack_id", rackID, "reported_digest", reported, "live_digest", live)
}

// LicenceKey is the stored key of os/release, masked; ENOTFOUND when none.
func (s *Service) LicenceKey(ctx context.Context, osName, release string) (postgres.LicenceKey, error) {
	keys, err := s.store.LicenceKeys(ctx)
	if err != nil {
		return postgres.LicenceKey{}, err
	}
	k, ok := keys[[2]string{osName, release}]
	if !ok {
		return postgres.LicenceKey{}, rackplane.Errorf(rackplane.ENOTFOUND, "no licence key for %s/%s", osName, release)
	}
	return k, nil
}

// SetLicenceKey stores key for os/release once a rack providing it has
// validated it; actor goes on the licence_key_set event. The key is not
// stored when no rack can validate it now. It is stored sealed, and
// events, the answer and logs carry only its masked form and keyed
// fingerprint. Only the racks providing the release see the key, on
// their own rpc subject, until one of them answers.
func (s *Service) SetLicenceKey(ctx context.Context, osName, release, key, actor string) (postgres.LicenceKey, error) {
	key = strings.TrimSpace(key)
	if key == "" || len(key) > 256 {
		return postgres.LicenceKey{}, rackplane.Errorf(rackplane.EINVALID, "key must be 1 to 256 characters")
	}
	all, err := s.store.ListImages(ctx, postgres.ImageFilter{OS: osName, Release: release})
	if err != nil {
		return postgres.LicenceKey{}, err
	}
	if len(all) == 0 {
		return postgres.LicenceKey{}, rackplane.Errorf(rackplane.ENOTFOUND, "no rack provides %s/%s", osName, release)
	}
	if !all[0].RequiresLicenceKey {
		return postgres.LicenceKey{}, rackplane.Errorf(rackplane.EINVALID, "%s/%s takes no licence key", osName, release)
	}
	online := onlineRacks(all)
	if len(online) == 0 {
		return postgres.LicenceKey{}, rackplane.Errorf(rackplane.EUNAVAILABLE, "no online rack provides %s/%s, so the key cannot be validated now; it was not stored", osName, release)
	}
	validatedBy, err := s.validateKey(ctx, online, osName, release, key)
	if err != nil {
		return postgres.LicenceKey{}, err
	}
	sealed := s.keys.SealSecret(postgres.LicenceKeyName(osName, release), []byte(key))
	data := events.LicenceKeySet{OS: osName, Release: release, Masked: Mask(key), Fingerprint: sealed.Fingerprint, ValidatedBy: validatedBy}
	ev, err := events.New(events.RegionSource, events.TypeLicenceKeySet, "os/"+osName+"/"+release, s.now(), data)
	if err != nil {
		return postgres.LicenceKey{}, err
	}
	ev.Actor = actor
	if err := s.store.SetLicenceKey(ctx, sealed, ev); err != nil {
		return postgres.LicenceKey{}, err
	}
	return postgres.LicenceKey{OS: osName, Release: release, Masked: data.Masked,
		Fingerprint: data.Fingerprint, ValidatedBy: validatedBy, SetAt: ev.Time}, nil
}

// validateKey asks the racks in turn until one answers; its verdict is
// final. It returns the rack that accepted the key.
func (s *Service) validateKey(ctx context.Context, racks []string, osName, release, key string) (string, error) {
	for _, rackID := range racks {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var res struct {
			Valid  bool   `json:"valid"`
			Reason string `json:"reason"`
		}
		err := rpc.Call(cctx, s.nc, events.RackRPCSubject(rackID, events.MethodValidateLicenceKey),
			map[string]string{"os": osName, "release": release, "key": key}, &res)
		cancel()
		if err != nil {
			s.log.Warn("licence key validation: rack did not answer", "rack_id", rackID, "err", err)
			continue
		}
		if !res.Valid {
			// The reason goes to the API answer and the audit log: a
			// rack echoing the key must not put it there.
			reason := strings.ReplaceAll(res.Reason, key, Mask(key))
			return "", rackplane.Errorf(rackplane.EINVALID, "rack %s refused the key: %s", rackID, reason)
		}
		return rackID, nil
	}
	return "", rackplane.Errorf(rackplane.EUNAVAILABLE, "no rack providing %s/%s answered, so the key cannot be validated now; it was not stored", osName, release)
}
