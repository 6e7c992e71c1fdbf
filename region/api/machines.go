package api

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

func (s *Server) machineRoutes() {
	s.handle("POST /api/v1/machines", s.createMachine)
	s.handle("GET /api/v1/machines", s.listMachines)
	s.handle("GET /api/v1/machines/{id}", s.getMachine)
	s.handle("PATCH /api/v1/machines/{id}", s.updateMachine)
	s.handle("DELETE /api/v1/machines/{id}", s.deleteMachine)
	s.handle("POST /api/v1/machines/{id}/deploy", s.deployMachine)
	s.handle("POST /api/v1/machines/{id}/release", s.releaseMachine)
	s.handle("POST /api/v1/machines/{id}/mark-failed", s.failMachine)
}

var (
	hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)
)

// NormalizeMAC returns mac as lower-case colon-separated hex.
func NormalizeMAC(mac string) (string, error) {
	canonical, err := events.CanonicalMAC(strings.TrimSpace(mac))
	if err != nil {
		return "", rackplane.Errorf(rackplane.EINVALID, "%q is not a MAC address such as 52:54:00:12:34:56", mac)
	}
	return canonical, nil
}

type machineRequest struct {
	Hostname   *string   `json:"hostname"`
	MACs       *[]string `json:"macs"`
	Arch       *string   `json:"arch"`
	BootRackID *string   `json:"boot_rack_id"`
}

// apply validates the request's fields onto st.
func (s *Server) apply(ctx context.Context, req machineRequest, st *events.MachineState) error {
	if req.Hostname != nil {
		if !hostnameRE.MatchString(*req.Hostname) {
			return rackplane.Errorf(rackplane.EINVALID, "hostname %q: want lower-case letters, digits and dashes, at most 63", *req.Hostname)
		}
		st.Hostname = *req.Hostname
	}
	if req.MACs != nil {
		if len(*req.MACs) == 0 || len(*req.MACs) > 16 {
			return rackplane.Errorf(rackplane.EINVALID, "macs: want 1 to 16 MAC addresses")
		}
		seen := map[string]bool{}
		st.MACs = nil
		for _, m := range *req.MACs {
			n, err := NormalizeMAC(m)
			if err != nil {
				return err
			}
			if !seen[n] {
				seen[n] = true
				st.MACs = append(st.MACs, n)
			}
		}
	}
	if req.Arch != nil {
		if !nameRE.MatchString(*req.Arch) {
			return rackplane.Errorf(rackplane.EINVALID, "arch %q is not an architecture name such as amd64", *req.Arch)
		}
		st.Arch = *req.Arch
	}
	if req.BootRackID != nil {
		st.BootRackID = ""
		if *req.BootRackID != "" {
			id, err := uuid.Parse(*req.BootRackID)
			if err != nil {
				return rackplane.Errorf(rackplane.EINVALID, "boot_rack_id %q is not a UUID", *req.BootRackID)
			}
			if _, err := s.db.GetRack(ctx, id.String()); err != nil {
				return rackplane.Errorf(rackplane.EINVALID, "boot_rack_id: no rack %s", id)
			}
			st.BootRackID = id.String()
		}
	}
	return nil
}

// checkMACsFree refuses MACs another machine has.
func (s *Server) checkMACsFree(ctx context.Context, macs []string, self string) error {
	for _, mac := range macs {
		m, err := s.db.MachineByMAC(ctx, mac)
		if err == nil && m.ID != self {
			return rackplane.Errorf(rackplane.ECONFLICT, "MAC %s belongs to machine %s (%s)", mac, m.Hostname, m.ID)
		}
		if err != nil && rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
			return err
		}
	}
	return nil
}

func (s *Server) emitMachine(ctx context.Context, id string, expected int64, evs ...events.Event) error {
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := s.db.EmitMachine(ctx, tx, id, expected, evs...)
		return err
	})
	if postgres.IsUniqueViolation(err) {
		return rackplane.WrapError(rackplane.ECONFLICT, err, "hostname or MAC already taken by another machine")
	}
	return err
}

func (s *Server) newEvent(ctx context.Context, typ, subject string, data any) (events.Event, error) {
	ev, err := events.New(events.RegionSource, typ, subject, time.Now(), data)
	if err != nil {
		return ev, err
	}
	ev.Actor = Actor(ctx)
	ev.CorrelationID = RequestID(ctx)
	return ev, nil
}

// localDecisions tells racks that the machine boots from its disk.
func (s *Server) localDecisions(ctx context.Context, st events.MachineState) ([]events.Event, error) {
	var out []events.Event
	for _, d := range events.LocalBoot(st.MachineID, st.Hostname, st.Arch, st.MACs) {
		ev, err := s.newEvent(ctx, events.TypeBootDecisionSet, events.MachineStreamName(st.MachineID), d)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func (s *Server) createMachine(w http.ResponseWriter, r *http.Request) error {
	var req machineRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Hostname == nil || req.MACs == nil {
		return rackplane.Errorf(rackplane.EINVALID, "hostname and macs are required")
	}
	st := events.MachineState{MachineID: uuid.NewString(), Arch: "amd64", Origin: "api", Status: events.MachineReady}
	if err := s.apply(r.Context(), req, &st); err != nil {
		return err
	}
	if err := s.checkMACsFree(r.Context(), st.MACs, ""); err != nil {
		return err
	}
	created, err := s.newEvent(r.Context(), events.TypeMachineCreated, events.MachineStreamName(st.MachineID), st)
	if err != nil {
		return err
	}
	decisions, err := s.localDecisions(r.Context(), st)
	if err != nil {
		return err
	}
	if err := s.emitMachine(r.Context(), st.MachineID, postgres.ExpectNoStream, append([]events.Event{created}, decisions...)...); err != nil {
		return err
	}
	m, err := s.db.GetMachine(r.Context(), st.MachineID)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), "machine/"+m.ID, nil, st)
	w.Header().Set("Location", "/api/v1/machines/"+m.ID)
	w.Header().Set("ETag", etag(m.Version))
	return writeJSON(w, http.StatusCreated, m)
}

func etag(v int64) string { return fmt.Sprintf(`"%d"`, v) }

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := QueryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	f := postgres.MachineFilter{Status: q.Get("status"), Hostname: q.Get("hostname"), OS: q.Get("os"), After: q.Get("after"), Limit: limit}
	if v := q.Get("mac"); v != "" {
		if f.MAC, err = NormalizeMAC(v); err != nil {
			return err
		}
	}
	ms, err := s.db.ListMachines(r.Context(), f)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []postgres.Machine{}
	}
	next := ""
	if len(ms) == limit {
		next = ms[len(ms)-1].Hostname
	}
	return writeJSON(w, http.StatusOK, map[string]any{"machines": ms, "next": next})
}

func (s *Server) machine(r *http.Request) (postgres.Machine, error) {
	id, err := PathUUID(r, "id")
	if err != nil {
		return postgres.Machine{}, err
	}
	// Failed mutations are audited against the machine too.
	AuditNote(r.Context(), "machine/"+id, nil, nil)
	return s.db.GetMachine(r.Context(), id)
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) error {
	m, err := s.machine(r)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(m.Version))
	return writeJSON(w, http.StatusOK, m)
}

// expectedVersion is the machine version a change must apply to: the
// If-Match of the request, when it has one, else the version just read.
func expectedVersion(r *http.Request, current int64) (int64, error) {
	im := r.Header.Get("If-Match")
	if im == "" {
		return current, nil
	}
	var v int64
	if _, err := fmt.Sscanf(strings.Trim(im, `"`), "%d", &v); err != nil {
		return 0, rackplane.Errorf(rackplane.EINVALID, "If-Match %q: want the version from the ETag, such as \"3\"", im)
	}
	if v != current {
		return 0, rackplane.Errorf(rackplane.EPRECONDITION, "version %d was changed: it is now at %d", v, current)
	}
	return v, nil
}

func conflictToPrecondition(err error) error {
	var ce *postgres.ConflictError
	if err != nil && errorsAs(err, &ce) {
		return rackplane.WrapError(rackplane.EPRECONDITION, err, "changed by someone else meanwhile; read it again")
	}
	return err
}

func stateOf(m postgres.Machine) events.MachineState {
	st := events.MachineState{MachineID: m.ID, Hostname: m.Hostname, MACs: m.MACs, Arch: m.Arch}
	if m.BootRackID != nil {
		st.BootRackID = *m.BootRackID
	}
	return st
}

func (s *Server) updateMachine(w http.ResponseWriter, r *http.Request) error {
	m, err := s.machine(r)
	if err != nil {
		return err
	}
	var req machineRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	expected, err := expectedVersion(r, m.Version)
	if err != nil {
		return err
	}
	before := stateOf(m)
	after := before
	after.MACs = append([]string(nil), before.MACs...)
	if err := s.apply(r.Context(), req, &after); err != nil {
		return err
	}
	if err := s.checkMACsFree(r.Context(), after.MACs, m.ID); err != nil {
		return err
	}
	evs := []events.Event{}
	ev, err := s.newEvent(r.Context(), events.TypeMachineUpdated, events.MachineStreamName(m.ID), after)
	if err != nil {
		return err
	}
	evs = append(evs, ev)
	// MACs that left the machine are forgotten by the racks; new ones
	// boot as the machine's others do.
	keep := map[string]bool{}
	for _, mac := range after.MACs {
		keep[mac] = true
	}
	for _, mac := range before.MACs {
		if !keep[mac] {
			ev, err := s.newEvent(r.Context(), events.TypeBootDecisionCleared, events.MachineStreamName(m.ID),
				events.BootDecisionCleared{MAC: mac, MachineID: m.ID, Reason: "MAC removed from the machine"})
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
	}
	var template *events.BootDecision
	if len(before.MACs) > 0 {
		template, _ = s.db.BootDecision(r.Context(), before.MACs[0])
	}
	for _, mac := range after.MACs {
		d := events.BootDecision{MAC: mac, MachineID: m.ID, Purpose: events.BootPurposeLocal}
		if template != nil {
			d = *template
			d.MAC = mac
		}
		d.Hostname, d.Arch = after.Hostname, after.Arch
		ev, err := s.newEvent(r.Context(), events.TypeBootDecisionSet, events.MachineStreamName(m.ID), d)
		if err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	if err := conflictToPrecondition(s.emitMachine(r.Context(), m.ID, expected, evs...)); err != nil {
		return err
	}
	AuditNote(r.Context(), "machine/"+m.ID, before, after)
	return s.getMachine(w, r)
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request) error {
	m, err := s.machine(r)
	if err != nil {
		return err
	}
	// A volume names its machine; deleting the machine first would leave
	// storage nobody can map back to an owner.
	vols, err := s.db.ListVolumes(r.Context(), m.ID, false)
	if err != nil {
		return err
	}
	if len(vols) > 0 {
		return rackplane.Errorf(rackplane.ECONFLICT, "machine %s still has %d volume(s); remove them first", m.Hostname, len(vols))
	}
	expected, err := expectedVersion(r, m.Version)
	if err != nil {
		return err
	}
	evs := []events.Event{}
	ev, err := s.newEvent(r.Context(), events.TypeMachineDeleted, events.MachineStreamName(m.ID), events.MachineRef{MachineID: m.ID})
	if err != nil {
		return err
	}
	evs = append(evs, ev)
	for _, mac := range m.MACs {
		ev, err := s.newEvent(r.Context(), events.TypeBootDecisionCleared, events.MachineStreamName(m.ID),
			events.BootDecisionCleared{MAC: mac, MachineID: m.ID, Reason: "machine deleted"})
		if err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	if err := conflictToPrecondition(s.emitMachine(r.Context(), m.ID, expected, evs...)); err != nil {
		return err
	}
	AuditNote(r.Context(), "machine/"+m.ID, stateOf(m), nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deployRequest struct {
	OS           string   `json:"os"`
	Release      string   `json:"release"`
	Arch         string   `json:"arch"`
	Subarch      string   `json:"subarch"`
	Preseed      string   `json:"preseed"`
	KernelParams []string `json:"kernel_params"`
}

var (
	kernelNames = []string{"linux", "vmlinuz", "kernel", "boot-kernel"}
	initrdNames = []string{"initrd", "initrd.gz", "initrd.img", "boot-initrd"}
)

func pick(files, names []string) string {
	for _, n := range names {
		for _, f := range files {
			if f == n {
				return f
			}
		}
	}
	return ""
}

func (s *Server) deployMachine(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	m, err := s.machine(r)
	if err != nil {
		return err
	}
	var req deployRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.OS == "" || req.Release == "" {
		return rackplane.Errorf(rackplane.EINVALID, "os and release are required: a deployment says what it installs")
	}
	if req.Arch == "" {
		req.Arch = m.Arch
	}
	for _, p := range req.KernelParams {
		if p == "" || len(p) > 256 || strings.ContainsAny(p, " \t\r\n\x00") {
			return rackplane.Errorf(rackplane.EINVALID, "kernel parameter %q: one word each, no spaces", p)
		}
	}
	switch m.Status {
	case events.MachineDeploying:
		return rackplane.Errorf(rackplane.ECONFLICT, "machine %s is already deploying; release it first", m.Hostname)
	case events.MachineDeployed:
		// A deploy reinstalls: on a machine in service that is a wipe, so
		// it takes an explicit release first.
		return rackplane.Errorf(rackplane.ECONFLICT, "machine %s is deployed; release it first to reinstall it", m.Hostname)
	}
	expected, err := expectedVersion(r, m.Version)
	if err != nil {
		return err
	}
	img, err := s.bootable(ctx, m, req)
	if err != nil {
		return err
	}
	kernel, initrd := pick(img.Files, kernelNames), pick(img.Files, initrdNames)
	if kernel == "" || initrd == "" {
		return rackplane.Errorf(rackplane.ECONFLICT, "image %s on rack %s has no kernel and initrd (files %v)", img.VersionID, img.RackName, img.Files)
	}
	dep := events.Deployment{MachineID: m.ID, OS: req.OS, Release: req.Release, Arch: req.Arch, Subarch: img.Subarch,
		ImageVersionID: img.VersionID, RackID: img.RackID}
	var p postgres.Preseed
	if req.Preseed != "" {
		p, err = s.db.GetPreseed(ctx, req.Preseed)
	} else {
		p, err = s.db.PreseedFor(ctx, m.ID, req.OS, req.Release, req.Arch)
	}
	switch {
	case err == nil:
		dep.PreseedName, dep.PreseedVersion = p.Name, p.CurrentVersion
	case req.Preseed != "" || rackplane.ErrorCode(err) != rackplane.ENOTFOUND:
		return err
	}
	evs := []events.Event{}
	ev, err := s.newEvent(ctx, events.TypeMachineDeploying, events.MachineStreamName(m.ID), dep)
	if err != nil {
		return err
	}
	evs = append(evs, ev)
	params := append([]string{"rackplane.machine=" + m.ID, "rackplane.hostname=" + m.Hostname}, req.KernelParams...)
	for _, mac := range m.MACs {
		d := events.BootDecision{MAC: mac, MachineID: m.ID, Hostname: m.Hostname, Purpose: events.BootPurposeInstall,
			Arch: req.Arch, Kernel: img.VersionID + "/" + kernel, Initrd: img.VersionID + "/" + initrd,
			ImageVer: img.VersionID, Params: params}
		if dep.PreseedName != "" {
			d.PreseedURL = strings.TrimRight(img.BootURL, "/") + "/preseed/" + m.ID
		}
		ev, err := s.newEvent(ctx, events.TypeBootDecisionSet, events.MachineStreamName(m.ID), d)
		if err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	if err := conflictToPrecondition(s.emitMachine(ctx, m.ID, expected, evs...)); err != nil {
		return err
	}
	AuditNote(ctx, "machine/"+m.ID, map[string]string{"status": m.Status}, dep)
	return s.getMachine(w, r)
}

// bootable picks the image a machine deploys: the newest version of
// os/release/arch on an online rack that can reach the machine (its boot
// rack when it has one). When there is none the error says what is missing
// where.
func (s *Server) bootable(ctx context.Context, m postgres.Machine, req deployRequest) (postgres.ImageOnRack, error) {
	all, err := s.db.ListImages(ctx, postgres.ImageFilter{OS: req.OS, Release: req.Release, Arch: req.Arch})
	if err != nil {
		return postgres.ImageOnRack{}, err
	}
	reach := func(rackID string) bool { return m.BootRackID == nil || *m.BootRackID == rackID }
	var best []postgres.ImageOnRack
	for _, i := range all {
		if i.Online && reach(i.RackID) && (req.Subarch == "" || i.Subarch == req.Subarch) {
			best = append(best, i)
		}
	}
	if len(best) > 0 {
		sort.SliceStable(best, func(a, b int) bool { return best[a].Version > best[b].Version })
		return best[0], nil
	}
	want := req.OS + "/" + req.Release + "/" + req.Arch
	if req.Subarch != "" {
		want += "/" + req.Subarch
	}
	var why []string
	for _, i := range all {
		switch {
		case !reach(i.RackID):
			why = append(why, fmt.Sprintf("rack %s has it but cannot reach the machine (its boot rack is another)", i.RackName))
		case !i.Online:
			why = append(why, fmt.Sprintf("rack %s has it but is offline", i.RackName))
		case req.Subarch != "" && i.Subarch != req.Subarch:
			why = append(why, fmt.Sprintf("rack %s has it only for subarch %s", i.RackName, i.Subarch))
		}
	}
	if len(why) == 0 {
		why = append(why, "no rack has an image of it")
	}
	return postgres.ImageOnRack{}, rackplane.Errorf(rackplane.ECONFLICT, "no online rack that can reach machine %s can boot %s: %s",
		m.Hostname, want, strings.Join(dedupe(why), "; "))
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func (s *Server) releaseMachine(w http.ResponseWriter, r *http.Request) error {
	m, err := s.machine(r)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(r, m.Version)
	if err != nil {
		return err
	}
	ev, err := s.newEvent(r.Context(), events.TypeMachineReleased, events.MachineStreamName(m.ID), events.MachineRef{MachineID: m.ID})
	if err != nil {
		return err
	}
	local, err := s.localDecisions(r.Context(), stateOf(m))
	if err != nil {
		return err
	}
	if err := conflictToPrecondition(s.emitMachine(r.Context(), m.ID, expected, append([]events.Event{ev}, local...)...)); err != nil {
		return err
	}
	AuditNote(r.Context(), "machine/"+m.ID, map[string]string{"status": m.Status}, map[string]string{"status": events.MachineReleased})
	return s.getMachine(w, r)
}

func (s *Server) failMachine(w http.ResponseWriter, r *http.Request) error {
	m, err := s.machine(r)
	if err != nil {
		return err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	expected, err := expectedVersion(r, m.Version)
	if err != nil {
		return err
	}
	ev, err := s.newEvent(r.Context(), events.TypeMachineFailed, events.MachineStreamName(m.ID), events.MachineRef{MachineID: m.ID, Reason: req.Reason})
	if err != nil {
		return err
	}
	if err := conflictToPrecondition(s.emitMachine(r.Context(), m.ID, expected, ev)); err != nil {
		return err
	}
	AuditNote(r.Context(), "machine/"+m.ID, map[string]string{"status": m.Status}, map[string]string{"status": events.MachineFailed, "reason": req.Reason})
	return s.getMachine(w, r)
}
