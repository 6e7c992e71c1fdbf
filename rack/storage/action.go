package storage

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
)

// Do runs action on the volume of req and returns the volume's record
// afterwards. A name that is not one of Actions is refused before anything
// else happens. Once the request is well-formed and the volume's record
// loaded, every outcome is written to the record and published as a
// volume_action_completed event, whatever went wrong.
//
// The script runs to its own timeout even if ctx ends first (a create or
// grow cut short by an impatient caller would leave the volume in an
// unknown state); the caller then gets ETIMEOUT and the outcome arrives
// as an event.
func (m *Manager) Do(ctx context.Context, action string, req Request) (Record, error) {
	a, ok := ParseAction(action)
	if !ok {
		return Record{}, rackplane.Errorf(rackplane.EINVALID, "unknown storage action %.40q", action)
	}
	if err := checkRequest(req); err != nil {
		return Record{}, err
	}
	if !m.lock(req.VolumeID) {
		return Record{}, rackplane.Errorf(rackplane.ECONFLICT, "another action is running on volume %s", req.VolumeID)
	}
	type outcome struct {
		rec Record
		err error
	}
	done := make(chan outcome, 1)
	// No action starts once Run has begun waiting for those under way:
	// an Add racing that Wait would let Run return with it running.
	m.mu.Lock()
	if m.stopping {
		m.mu.Unlock()
		m.unlock(req.VolumeID)
		return Record{}, rackplane.Errorf(rackplane.EUNAVAILABLE, "the rack is stopping: %s of volume %s did not run; ask again once it is back", a, req.VolumeID)
	}
	m.running.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.running.Done()
		rec, err := m.safeDo(context.WithoutCancel(ctx), a, req)
		// Unlocked before answering, so the caller's next action on the
		// volume does not find it busy.
		m.unlock(req.VolumeID)
		done <- outcome{rec, err}
	}()
	select {
	case o := <-done:
		return o.rec, o.err
	case <-ctx.Done():
		return Record{}, rackplane.WrapError(rackplane.ETIMEOUT, ctx.Err(),
			"%s of volume %s is still running; its outcome will be published as an event", a, req.VolumeID)
	}
}

// safeDo keeps a bug in one action from taking the rack down: this runs
// outside the rpc server's own recovery.
func (m *Manager) safeDo(ctx context.Context, a Action, req Request) (rec Record, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = rackplane.WrapError(rackplane.EINTERNAL, fmt.Errorf("panic: %v", r), "%s of volume %s failed", a, req.VolumeID)
		}
	}()
	return m.do(ctx, a, req)
}

func (m *Manager) do(ctx context.Context, a Action, req Request) (Record, error) {
	rec, found, err := m.records.load(req.VolumeID)
	if err != nil {
		return Record{}, rackplane.WrapError(rackplane.EINTERNAL, err, "the rack's record of volume %s is unreadable; an operator must repair it", req.VolumeID)
	}
	if !found {
		rec = Record{VolumeID: req.VolumeID, State: events.VolumeStateNone}
	}
	prev := rec // what a failure leaves in place
	if rec.Provider == "" {
		rec.Provider = req.Provider
	}
	if rec.Machine == "" || a == ActionSetinfo && req.Machine != "" {
		rec.Machine = req.Machine
	}
	switch {
	case rec.Provider == "" || rec.Machine == "":
		return Record{}, rackplane.Errorf(rackplane.EINVALID, "provider and machine are required for a volume this rack has no record of")
	case req.Provider != "" && req.Provider != rec.Provider:
		return Record{}, rackplane.Errorf(rackplane.ECONFLICT, "volume %s belongs to provider %s, not %s", rec.VolumeID, rec.Provider, req.Provider)
	case req.Machine != "" && req.Machine != rec.Machine:
		return Record{}, rackplane.Errorf(rackplane.ECONFLICT, "volume %s belongs to machine %s; setinfo changes the owner", rec.VolumeID, rec.Machine)
	}
	if rec.Name == "" {
		// Fixed at the first action: the provider knows the volume by it.
		rec.Name = VolumeName(rec.VolumeID, rec.Machine)
	}
	if req.Parameters != nil {
		rec.Parameters = maps.Clone(req.Parameters)
	}
	start := m.cfg.Now()
	r, err := m.act(ctx, a, &rec, req, start)
	m.finish(a, req, prev, &rec, start, r, err)
	return rec, err
}

// act checks the action against the provider and the record, then runs the
// script with the record marked pending. It updates rec's state on success.
func (m *Manager) act(ctx context.Context, a Action, rec *Record, req Request, start time.Time) (scriptrun.Result, error) {
	p, err := m.provider(rec.Provider)
	if err != nil {
		return scriptrun.Result{}, err
	}
	if !offers(p, a) {
		return scriptrun.Result{}, rackplane.Errorf(rackplane.EPRECONDITION, "storage provider %s has no %s script: %s is optional in the ExtStorage interface and this provider does not offer it", p.Name, a, a)
	}
	for k := range rec.Parameters {
		if !declares(p, k) {
			return scriptrun.Result{}, rackplane.Errorf(rackplane.EINVALID, "storage provider %s has no parameter %q", p.Name, k)
		}
	}
	newSize, err := m.precheck(a, rec, req)
	if err != nil {
		return scriptrun.Result{}, err
	}
	rec.Pending = string(a)
	rec.UpdatedAt = m.cfg.Now().UTC()
	if err := m.records.save(*rec); err != nil {
		// Without a record nothing runs: that is the promise.
		return scriptrun.Result{}, rackplane.WrapError(rackplane.EINTERNAL, err, "volume record unwritable; %s not run", a)
	}
	lg, err := openVolumeLog(filepath.Join(m.logDir, rec.VolumeID+".log"), m.cfg.LogMaxBytes)
	if err != nil {
		return scriptrun.Result{}, rackplane.WrapError(rackplane.EINTERNAL, err, "volume log unwritable; %s not run", a)
	}
	fmt.Fprintf(lg, "=== %s %s provider=%s name=%s\n", m.cfg.Now().UTC().Format(time.RFC3339Nano), a, p.Name, rec.Name)
	env := environment(a, *rec, req, p, newSize)
	stdoutLimit := 0
	if a == ActionAttach {
		stdoutLimit = maxAttachOutput
	}
	r := scriptrun.Run(ctx, scriptrun.Spec{Dir: p.Path, Path: script(a), Env: env, Marker: RunMarker,
		Timeout: m.timeout(a), Log: lg, StdoutLimit: stdoutLimit, Now: m.cfg.Now})
	fmt.Fprintf(lg, "=== %s %s", m.cfg.Now().UTC().Format(time.RFC3339Nano), a)
	switch {
	case r.Err != nil:
		fmt.Fprintf(lg, " failed after %s: %v\n", r.Duration.Round(time.Millisecond), r.Err)
	default:
		fmt.Fprintf(lg, " ok after %s\n", r.Duration.Round(time.Millisecond))
	}
	if err := lg.Close(); err != nil {
		m.log.Warn("volume log", "volume_id", rec.VolumeID, "err", err)
	}
	if r.Err != nil {
		code := rackplane.EUNAVAILABLE
		if r.TimedOut {
			code = rackplane.ETIMEOUT
		}
		return r, rackplane.Errorf(code, "storage provider %s: %v%s", p.Name, r.Err, scriptrun.TailText(r.Tail))
	}
	switch a {
	case ActionCreate:
		rec.State = events.VolumeStateCreated
		rec.Open, rec.OpenExclusive = false, false
	case ActionAttach:
		att, err := attachment(r)
		if err != nil {
			return r, rackplane.Errorf(rackplane.EUNAVAILABLE, "storage provider %s: %v%s", p.Name, err, scriptrun.TailText(r.Tail))
		}
		rec.State, rec.VolumeAttachment = events.VolumeStateAttached, att
	case ActionDetach:
		rec.State, rec.VolumeAttachment = events.VolumeStateDetached, Attachment{}
	case ActionRemove:
		rec.State, rec.VolumeAttachment = events.VolumeStateRemoved, Attachment{}
	case ActionGrow:
		rec.SizeMiB = newSize
	case ActionSnapshot:
		rec.Snapshots = append(rec.Snapshots, Snapshot{Name: req.SnapshotName, TakenAt: start.UTC()})
	case ActionOpen:
		rec.Open, rec.OpenExclusive = true, req.Exclusive
	case ActionClose:
		rec.Open, rec.OpenExclusive = false, false
	}
	return r, nil
}

// precheck refuses actions that make no sense in the volume's recorded
// state and works out sizes. It returns the new size for grow.
func (m *Manager) precheck(a Action, rec *Record, req Request) (int64, error) {
	switch {
	case req.SnapshotName != "" && a != ActionSnapshot:
		return 0, rackplane.Errorf(rackplane.EINVALID, "snapshot_name is for snapshot only")
	case req.Exclusive && a != ActionOpen:
		return 0, rackplane.Errorf(rackplane.EINVALID, "exclusive is for open only")
	case rec.State == events.VolumeStateRemoved && a != ActionCreate && a != ActionRemove && a != ActionDetach:
		return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s was removed", rec.VolumeID)
	case rec.Open && (a == ActionDetach || a == ActionRemove):
		// Ganeti closes before it detaches: an open device may be in use.
		return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s is open; close it first", rec.VolumeID)
	}
	switch a {
	case ActionCreate:
		if rec.State != events.VolumeStateNone && rec.State != events.VolumeStateRemoved && rec.State != events.VolumeStateUnknown {
			return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s already exists (%s)", rec.VolumeID, rec.State)
		}
		if req.SizeMiB <= 0 {
			return 0, rackplane.Errorf(rackplane.EINVALID, "create needs size_mib")
		}
		rec.SizeMiB = req.SizeMiB
	case ActionGrow:
		if req.SizeMiB > 0 {
			rec.SizeMiB = req.SizeMiB
		}
		if rec.SizeMiB <= 0 {
			return 0, rackplane.Errorf(rackplane.EINVALID, "grow needs size_mib, the current size, for a volume this rack did not create")
		}
		if req.NewSizeMiB <= rec.SizeMiB {
			return 0, rackplane.Errorf(rackplane.EINVALID, "grow needs new_size_mib above the current %d MiB", rec.SizeMiB)
		}
		return req.NewSizeMiB, nil
	case ActionRemove:
		if rec.State == events.VolumeStateAttached {
			return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s is attached; detach it first", rec.VolumeID)
		}
	case ActionSnapshot:
		if rec.State == events.VolumeStateNone {
			return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s was not created through this rack; only its volumes can be snapshotted", rec.VolumeID)
		}
		if req.SnapshotName == "" {
			return 0, rackplane.Errorf(rackplane.EINVALID, "snapshot needs snapshot_name")
		}
		if rec.SizeMiB <= 0 {
			return 0, rackplane.Errorf(rackplane.EINVALID, "the size of volume %s is not known; it is needed for VOL_SNAPSHOT_SIZE", rec.VolumeID)
		}
		// Taking a name twice would have the provider overwrite a
		// snapshot, or fail halfway; either loses the older one.
		if slices.ContainsFunc(rec.Snapshots, func(s Snapshot) bool { return s.Name == req.SnapshotName }) {
			return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s already has a snapshot %s", rec.VolumeID, req.SnapshotName)
		}
	case ActionOpen:
		if rec.State != events.VolumeStateAttached {
			return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s is %s; attach it before opening it", rec.VolumeID, rec.State)
		}
	case ActionClose:
		// An open record allows close whatever the state, so that a
		// volume whose open or close was interrupted can still be closed.
		if !rec.Open && rec.State != events.VolumeStateAttached {
			return 0, rackplane.Errorf(rackplane.ECONFLICT, "volume %s is %s, not open; there is nothing to close", rec.VolumeID, rec.State)
		}
	}
	return 0, nil
}

// attachment reads attach's stdout and checks the device is a block device.
func attachment(r scriptrun.Result) (Attachment, error) {
	if r.Overflow {
		return Attachment{}, fmt.Errorf("attach printed more than %d bytes", maxAttachOutput)
	}
	att, err := ParseAttachOutput(r.Stdout)
	if err != nil {
		return Attachment{}, err
	}
	if att.Device != "" {
		if err := CheckBlockDevice(att.Device); err != nil {
			return Attachment{}, fmt.Errorf("attach printed %s: %w", att.Device, err)
		}
	}
	return att, nil
}

// finish writes the outcome to the record, the metrics, the log and an
// event. On failure the state is left as it was, except that a create or
// grow that ran and failed may have done part of its work.
func (m *Manager) finish(a Action, req Request, prev Record, rec *Record, start time.Time, r scriptrun.Result, err error) {
	rec.Pending = ""
	rec.LastAction = string(a)
	rec.LastOK = err == nil
	rec.LastError, rec.LastOutputTail = "", nil
	if err != nil {
		ran := !r.Started.IsZero()
		state, att, size := prev.State, prev.VolumeAttachment, prev.SizeMiB
		if ran && (a == ActionCreate || a == ActionRemove) {
			state = events.VolumeStateUnknown
		}
		rec.State, rec.VolumeAttachment, rec.SizeMiB = state, att, size
		if prev.Name != "" {
			// A failed setinfo changes no owner, a failed action no
			// parameters, of a volume the rack already knew.
			rec.Machine, rec.Parameters = prev.Machine, prev.Parameters
		}
		rec.LastError = rackplane.ErrorMessage(err)
		rec.LastOutputTail = r.Tail
	}
	rec.UpdatedAt = m.cfg.Now().UTC()
	if serr := m.records.save(*rec); serr != nil {
		m.log.Error("volume record unwritable after action", "volume_id", rec.VolumeID, "action", a, "err", serr)
	}
	result := "ok"
	if err != nil {
		result = rackplane.ErrorCode(err)
		m.log.Warn("storage action failed", "volume_id", rec.VolumeID, "action", a, "provider", rec.Provider, "err", err)
	} else {
		m.log.Info("storage action done", "volume_id", rec.VolumeID, "action", a, "provider", rec.Provider, "state", rec.State)
	}
	m.actions.WithLabelValues(string(a), result).Inc()
	if !r.Started.IsZero() {
		m.duration.WithLabelValues(string(a)).Observe(r.Duration.Seconds())
	}
	data := events.VolumeActionCompleted{
		Action: string(a), VolumeID: rec.VolumeID, VolumeName: rec.Name, Machine: rec.Machine,
		Provider: rec.Provider, OK: err == nil, State: rec.State, SizeMiB: rec.SizeMiB,
		Device: rec.Device, URIs: rec.URIs, StartedAt: start.UTC(),
		DurationMS: m.cfg.Now().Sub(start).Milliseconds(), ExitCode: r.ExitCode,
		Open: rec.Open, OpenExclusive: rec.OpenExclusive,
	}
	if a == ActionSnapshot {
		data.SnapshotName = req.SnapshotName
	}
	if data.DurationMS < 0 {
		data.DurationMS = 0
	}
	if err != nil {
		data.ErrorCode = rackplane.ErrorCode(err)
		data.Error = truncate(rackplane.ErrorMessage(err), 65536)
		data.OutputTail = r.Tail
	}
	m.publish(events.TypeVolumeActionCompleted, events.VolumeStreamName(rec.VolumeID), data)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
