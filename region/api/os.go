package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/schema"
)

// Live queries wait DefaultLiveTimeout unless the request says otherwise,
// and never longer than MaxLiveTimeout.
const (
	DefaultLiveTimeout = 2 * time.Second
	MaxLiveTimeout     = 10 * time.Second
)

func (s *Server) osRoutes() {
	s.handle("GET /api/v1/os", s.listOS)
	s.handle("GET /api/v1/racks/{id}/capabilities", s.rackCapabilities)
	s.handle("PUT /api/v1/os/{os}/{release}/licence-key", s.putLicenceKey)
	s.handle("GET /api/v1/os/{os}/{release}/licence-key", s.getLicenceKey)
}

// OSEntry is one OS/release/arch/subarch the installation supports, with
// the racks that have images of it.
type OSEntry struct {
	OS                 string `json:"os"`
	OSTitle            string `json:"os_title"`
	Release            string `json:"release"`
	Title              string `json:"title"`
	Arch               string `json:"arch"`
	Subarch            string `json:"subarch"`
	Default            bool   `json:"default"`
	RequiresLicenceKey bool   `json:"requires_licence_key"`
	LicenceKeySet      bool   `json:"licence_key_set"`
	CanCommission      bool   `json:"can_commission"`
	// Available is true when at least one online rack can boot it now.
	Available bool          `json:"available"`
	Racks     []OSEntryRack `json:"racks"`
}

// OSEntryRack is a rack that has images of an OSEntry.
type OSEntryRack struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	Online   bool           `json:"online"`
	Versions []VersionBrief `json:"versions"`
}

// VersionBrief names an image version.
type VersionBrief struct {
	ID      string `json:"id"`
	Label   string `json:"label"`
	Version string `json:"version"`
}

// RackBrief names a rack.
type RackBrief struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type osResponse struct {
	Live bool      `json:"live"`
	OSes []OSEntry `json:"oses"`
	// Live queries only: racks expected to answer that did not in time.
	NotAnswered []RackBrief `json:"not_answered,omitempty"`
	Answered    []RackBrief `json:"answered,omitempty"`
	ElapsedMS   int64       `json:"elapsed_ms,omitempty"`
}

func liveTimeout(r *http.Request) (bool, time.Duration, error) {
	q := r.URL.Query()
	live := q.Get("live") == "true" || q.Get("live") == "1"
	if v := q.Get("live"); v != "" && v != "true" && v != "1" && v != "false" && v != "0" {
		return false, 0, rackplane.Errorf(rackplane.EINVALID, "live must be true or false")
	}
	d, err := QueryDuration(r, "timeout", DefaultLiveTimeout, 10*time.Millisecond, MaxLiveTimeout)
	return live, d, err
}

func (s *Server) listOS(w http.ResponseWriter, r *http.Request) error {
	live, timeout, err := liveTimeout(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := postgres.ImageFilter{OS: q.Get("os"), Release: q.Get("release"), Arch: q.Get("arch")}
	keys, err := s.db.LicenceKeys(r.Context())
	if err != nil {
		return err
	}
	if !live {
		imgs, err := s.db.ListImages(r.Context(), f)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, osResponse{OSes: group(imgs, keys)})
	}
	resp, err := s.liveOS(r.Context(), timeout, f)
	if err != nil {
		return err
	}
	resp.OSes = group(filter(resp.imgs, f), keys)
	return writeJSON(w, http.StatusOK, resp.osResponse)
}

type liveResult struct {
	osResponse
	imgs []postgres.ImageOnRack
}

// liveOS asks every rack at once and merges what answers in time. It never
// waits past timeout; racks expected to answer (the online ones) that did
// not are named.
func (s *Server) liveOS(ctx context.Context, timeout time.Duration, f postgres.ImageFilter) (liveResult, error) {
	racks, err := s.db.ListRacks(ctx)
	if err != nil {
		return liveResult{}, err
	}
	names := map[string]string{}
	var expect []string
	for _, rk := range racks {
		names[rk.ID] = rk.Name
		if rk.Online {
			expect = append(expect, rk.ID)
		}
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	g, err := rpc.Gather(gctx, s.nc, events.RacksRPCSubject(events.MethodCapabilities), struct{}{}, expect)
	if err != nil {
		return liveResult{}, err
	}
	res := liveResult{osResponse: osResponse{Live: true, ElapsedMS: g.Elapsed.Milliseconds(), Answered: []RackBrief{}, NotAnswered: []RackBrief{}}}
	digests, err := s.db.CapabilityDigests(ctx)
	if err != nil {
		return liveResult{}, err
	}
	answered := map[string]bool{}
	for _, rep := range g.Replies {
		caps, err := s.decodeCapabilities(rep)
		if err != nil {
			s.log.Warn("live capabilities: bad answer", "rack_id", rep.From, "err", err)
			continue
		}
		answered[rep.From] = true
		res.Answered = append(res.Answered, RackBrief{ID: rep.From, Name: names[rep.From]})
		if reported, ok := digests[rep.From]; ok && reported != caps.Digest {
			s.recordDivergence(ctx, rep.From, reported, caps.Digest)
		}
		res.imgs = append(res.imgs, imagesOf(rep.From, names[rep.From], caps)...)
	}
	for _, id := range expect {
		if !answered[id] {
			res.NotAnswered = append(res.NotAnswered, RackBrief{ID: id, Name: names[id]})
		}
	}
	return res, nil
}

// decodeCapabilities checks a rack's answer against the contract: it is
// outside input like any other.
func (s *Server) decodeCapabilities(rep rpc.Reply) (events.Capabilities, error) {
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

func (s *Server) recordDivergence(ctx context.Context, rackID, reported, live string) {
	ev, err := events.New(events.RegionSource, events.TypeCapabilitiesDiverged, events.RackStreamName(rackID), time.Now(),
		events.CapabilitiesDiverged{RackID: rackID, ReportedDigest: reported, LiveDigest: live})
	if err == nil {
		err = s.db.RecordDivergence(ctx, ev)
	}
	if err != nil {
		s.log.Warn("record capabilities divergence", "rack_id", rackID, "err", err)
		return
	}
	s.log.Warn("rack's live capabilities differ from its last snapshot", "rack_id", rackID, "reported_digest", reported, "live_digest", live)
}

func imagesOf(rackID, name string, c events.Capabilities) []postgres.ImageOnRack {
	var out []postgres.ImageOnRack
	for _, o := range c.OSes {
		for _, rel := range o.Releases {
			for _, a := range rel.Arches {
				for _, v := range a.Versions {
					out = append(out, postgres.ImageOnRack{RackID: rackID, RackName: name, Online: true,
						OS: o.Name, OSTitle: o.Title, Release: rel.Name, ReleaseTitle: rel.Title, Default: rel.Default,
						RequiresLicenceKey: rel.RequiresLicenceKey, CanCommission: rel.CanCommission,
						Arch: a.Arch, Subarch: a.Subarch, VersionID: v.ID, Label: v.Label, Version: v.Version})
				}
			}
		}
	}
	return out
}

func filter(imgs []postgres.ImageOnRack, f postgres.ImageFilter) []postgres.ImageOnRack {
	var out []postgres.ImageOnRack
	for _, i := range imgs {
		if (f.OS == "" || i.OS == f.OS) && (f.Release == "" || i.Release == f.Release) && (f.Arch == "" || i.Arch == f.Arch) {
			out = append(out, i)
		}
	}
	return out
}

// group folds image rows into one entry per os/release/arch/subarch, each
// with its racks and their versions.
func group(imgs []postgres.ImageOnRack, keys map[[2]string]postgres.LicenceKey) []OSEntry {
	type key struct{ os, release, arch, subarch string }
	idx := map[key]int{}
	out := []OSEntry{}
	for _, i := range imgs {
		k := key{i.OS, i.Release, i.Arch, i.Subarch}
		n, ok := idx[k]
		if !ok {
			_, keySet := keys[[2]string{i.OS, i.Release}]
			out = append(out, OSEntry{OS: i.OS, OSTitle: i.OSTitle, Release: i.Release, Title: i.ReleaseTitle,
				Arch: i.Arch, Subarch: i.Subarch, Default: i.Default, RequiresLicenceKey: i.RequiresLicenceKey,
				LicenceKeySet: keySet, CanCommission: i.CanCommission, Racks: []OSEntryRack{}})
			n = len(out) - 1
			idx[k] = n
		}
		e := &out[n]
		if i.Online {
			e.Available = true
		}
		if len(e.Racks) == 0 || e.Racks[len(e.Racks)-1].ID != i.RackID {
			e.Racks = append(e.Racks, OSEntryRack{ID: i.RackID, Name: i.RackName, Online: i.Online, Versions: []VersionBrief{}})
		}
		rk := &e.Racks[len(e.Racks)-1]
		rk.Versions = append(rk.Versions, VersionBrief{ID: i.VersionID, Label: i.Label, Version: i.Version})
	}
	sort.SliceStable(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.OS != y.OS {
			return x.OS < y.OS
		}
		if x.Release != y.Release {
			return x.Release < y.Release
		}
		if x.Arch != y.Arch {
			return x.Arch < y.Arch
		}
		return x.Subarch < y.Subarch
	})
	for i := range out {
		sort.SliceStable(out[i].Racks, func(a, b int) bool { return out[i].Racks[a].Name < out[i].Racks[b].Name })
	}
	return out
}

type rackCapabilitiesResponse struct {
	postgres.RackCapabilities
	// Available is false while the rack is offline: its snapshot is kept,
	// but nothing it offers can be booted now.
	Available bool `json:"available"`
	Live      bool `json:"live"`
	// Live only: whether the answer matches the last reported snapshot.
	MatchesReported *bool `json:"matches_reported,omitempty"`
}

func (s *Server) rackCapabilities(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	live, timeout, err := liveTimeout(r)
	if err != nil {
		return err
	}
	rack, err := s.db.GetRack(r.Context(), id)
	if err != nil {
		return err
	}
	if !live {
		rc, err := s.db.GetRackCapabilities(r.Context(), id)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, rackCapabilitiesResponse{RackCapabilities: rc, Available: rc.Online})
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var raw json.RawMessage
	if err := rpc.Call(ctx, s.nc, events.RackRPCSubject(id, events.MethodCapabilities), struct{}{}, &raw); err != nil {
		return err
	}
	caps, err := s.decodeCapabilities(rpc.Reply{From: id, Result: raw})
	if err != nil {
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s answered with invalid capabilities", id)
	}
	resp := rackCapabilitiesResponse{RackCapabilities: postgres.RackCapabilities{RackID: id, RackName: rack.Name,
		Online: true, ReportedAt: time.Now().UTC(), Capabilities: caps}, Available: true, Live: true}
	if prev, err := s.db.GetRackCapabilities(r.Context(), id); err == nil {
		match := prev.Capabilities.Digest == caps.Digest
		resp.MatchesReported = &match
		if !match {
			s.recordDivergence(r.Context(), id, prev.Capabilities.Digest, caps.Digest)
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

type licenceKeyRequest struct {
	Key string `json:"key"`
}

func (s *Server) putLicenceKey(w http.ResponseWriter, r *http.Request) error {
	osName, release := r.PathValue("os"), r.PathValue("release")
	var req licenceKeyRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	key := strings.TrimSpace(req.Key)
	if key == "" || len(key) > 256 {
		return rackplane.Errorf(rackplane.EINVALID, "key must be 1 to 256 characters")
	}
	all, err := s.db.ListImages(r.Context(), postgres.ImageFilter{OS: osName, Release: release})
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return rackplane.Errorf(rackplane.ENOTFOUND, "no rack provides %s/%s", osName, release)
	}
	if !all[0].RequiresLicenceKey {
		return rackplane.Errorf(rackplane.EINVALID, "%s/%s takes no licence key", osName, release)
	}
	var online []string
	seen := map[string]bool{}
	for _, i := range all {
		if i.Online && !seen[i.RackID] {
			seen[i.RackID] = true
			online = append(online, i.RackID)
		}
	}
	if len(online) == 0 {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "no online rack provides %s/%s, so the key cannot be validated now; it was not stored", osName, release)
	}
	var validatedBy string
	for _, rackID := range online {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		var res struct {
			Valid  bool   `json:"valid"`
			Reason string `json:"reason"`
		}
		err := rpc.Call(ctx, s.nc, events.RackRPCSubject(rackID, events.MethodValidateLicenceKey),
			map[string]string{"os": osName, "release": release, "key": key}, &res)
		cancel()
		if err != nil {
			s.log.Warn("licence key validation: rack did not answer", "rack_id", rackID, "err", err)
			continue
		}
		if !res.Valid {
			return rackplane.Errorf(rackplane.EINVALID, "rack %s refused the key: %s", rackID, res.Reason)
		}
		validatedBy = rackID
		break
	}
	if validatedBy == "" {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "no rack providing %s/%s answered, so the key cannot be validated now; it was not stored", osName, release)
	}
	sum := sha256.Sum256([]byte(key))
	data := events.LicenceKeySet{OS: osName, Release: release, Masked: Mask(key), Fingerprint: hex.EncodeToString(sum[:]), ValidatedBy: validatedBy}
	ev, err := events.New(events.RegionSource, events.TypeLicenceKeySet, "os/"+osName+"/"+release, time.Now(), data)
	if err != nil {
		return err
	}
	ev.Actor = Actor(r.Context())
	if err := s.db.SetLicenceKey(r.Context(), key, ev); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, postgres.LicenceKey{OS: osName, Release: release, Masked: data.Masked,
		Fingerprint: data.Fingerprint, ValidatedBy: validatedBy, SetAt: ev.Time})
}

func (s *Server) getLicenceKey(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.db.LicenceKeys(r.Context())
	if err != nil {
		return err
	}
	k, ok := keys[[2]string{r.PathValue("os"), r.PathValue("release")}]
	if !ok {
		return rackplane.Errorf(rackplane.ENOTFOUND, "no licence key for %s/%s", r.PathValue("os"), r.PathValue("release"))
	}
	return writeJSON(w, http.StatusOK, k)
}

// Mask hides all but the last four letters or digits of a key, keeping
// its separators so an operator can still tell keys apart.
func Mask(key string) string {
	b := []byte(key)
	keep := 4
	for i := len(b) - 1; i >= 0; i-- {
		c := b[i]
		isAlnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !isAlnum {
			continue
		}
		if keep > 0 {
			keep--
			continue
		}
		b[i] = '*'
	}
	return string(b)
}

type actorKey struct{}

// Actor returns who makes an API request (set by authentication).
func Actor(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}
