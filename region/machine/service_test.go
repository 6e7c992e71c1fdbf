package machine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
)

// world is a migrated database with one online rack that has one image,
// and a lifecycle service on it whose clock the test moves.
type world struct {
	t     *testing.T
	db    *postgres.DB
	svc   *machine.Service
	clock time.Time
	mu    sync.Mutex
}

func newWorld(t *testing.T) *world {
	t.Helper()
	db := machinetest.Database(t)
	w := &world{t: t, db: db, clock: now}
	w.svc = machine.NewService(db, w.now, slog.New(slog.DiscardHandler))
	return w
}

func (w *world) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clock
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clock = w.clock.Add(d)
}

func (w *world) create(hostname, mac string) rackplane.Machine {
	w.t.Helper()
	m, err := w.svc.Create(context.Background(), machine.CreateRequest{Hostname: hostname, MACs: []string{mac}}, machine.Meta{Actor: "tester"})
	if err != nil {
		w.t.Fatalf("create %s: %v", hostname, err)
	}
	return m
}

func (w *world) deploy(m rackplane.Machine) rackplane.Machine {
	w.t.Helper()
	res, err := w.svc.Deploy(context.Background(), m.ID, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{Actor: "tester"})
	if err != nil {
		w.t.Fatalf("deploy %s: %v", m.Hostname, err)
	}
	return res.After
}

func TestServiceDeploysAndReports(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	m := w.create("node1", "52:54:00:00:01:01")
	if m.Status != events.MachineReady || m.Version == 0 || len(m.Actions) == 0 {
		t.Fatalf("created %+v", m)
	}
	d := w.deploy(m)
	if d.Status != events.MachineDeploying || d.ImageVersionID != image.VersionID || d.DeploymentID == nil {
		t.Fatalf("deployed %+v", d)
	}
	b, err := w.db.BootDecision(ctx, "52:54:00:00:01:01")
	if err != nil || b == nil || b.Purpose != events.BootPurposeInstall || b.Kernel != image.VersionID+"/linux" {
		t.Fatalf("boot decision after deploy: %+v %v", b, err)
	}

	// A report for another deployment is refused and changes nothing.
	if _, err := w.svc.InstallReported(ctx, m.ID, "0190f0e0-0000-7000-8000-00000000dead", true, "", machine.Meta{}); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
		t.Fatalf("report for another deployment: %v", err)
	}
	res, err := w.svc.InstallReported(ctx, m.ID, *d.DeploymentID, true, "done", machine.Meta{})
	if err != nil || !res.Changed || res.After.Status != events.MachineDeployed || res.After.DeployedAt == nil {
		t.Fatalf("success report: %+v %v", res, err)
	}
	// Installers retry: the same report again is answered, not refused.
	res, err = w.svc.InstallReported(ctx, m.ID, *d.DeploymentID, true, "done", machine.Meta{})
	if err != nil || res.Changed || res.After.Status != events.MachineDeployed {
		t.Fatalf("repeated report: %+v %v", res, err)
	}
	if b, _ := w.db.BootDecision(ctx, "52:54:00:00:01:01"); b == nil || b.Purpose != events.BootPurposeLocal {
		t.Fatalf("a deployed machine boots %+v, want from its disk", b)
	}
	// A failure report now is too late.
	if _, err := w.svc.InstallReported(ctx, m.ID, *d.DeploymentID, false, "", machine.Meta{}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("late failure report: %v", err)
	}

	// Broken and fixed: back to deployed, because it was.
	if res, err := w.svc.MarkBroken(ctx, m.ID, "fan", machine.Meta{}); err != nil || res.After.Status != events.MachineBroken || res.After.StatusReason != "fan" {
		t.Fatalf("mark broken: %+v %v", res.After, err)
	}
	if res, err := w.svc.MarkFixed(ctx, m.ID, machine.Meta{}); err != nil || res.After.Status != events.MachineDeployed || res.After.StatusReason != "" {
		t.Fatalf("mark fixed: %+v %v", res.After, err)
	}
	if res, err := w.svc.Release(ctx, m.ID, machine.ReleaseRequest{}, machine.Meta{}); err != nil || res.After.Status != events.MachineReady || res.After.DeploymentID != nil || res.After.DeployedAt != nil {
		t.Fatalf("release: %+v %v", res.After, err)
	}
	if _, err := w.svc.Release(ctx, m.ID, machine.ReleaseRequest{}, machine.Meta{}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("release of a ready machine: %v", err)
	}

	// The projection that the lifecycle wrote is what a rebuild from the
	// log makes.
	before, _ := w.svc.Get(ctx, m.ID)
	if _, err := w.db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := w.svc.Get(ctx, m.ID)
	if before.Status != after.Status || before.Version != after.Version || before.UpdatedAt != after.UpdatedAt {
		t.Fatalf("rebuild changed the machine:\n%+v\n%+v", before, after)
	}
}

func TestServiceTimesOutDeployments(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	late := w.deploy(w.create("late", "52:54:00:00:02:01"))
	w.advance(20 * time.Minute)
	fresh := w.deploy(w.create("fresh", "52:54:00:00:02:02"))
	w.advance(15 * time.Minute)

	failed, err := w.svc.TimeOutDeployments(ctx, 30*time.Minute, 100)
	if err != nil || len(failed) != 1 || failed[0].ID != late.ID {
		t.Fatalf("timed out %+v, %v; want only %s", failed, err, late.Hostname)
	}
	m, _ := w.svc.Get(ctx, late.ID)
	if m.Status != events.MachineFailed || !strings.Contains(m.StatusReason, "within the deployment timeout of 30m0s") {
		t.Fatalf("timed-out machine: %+v", m)
	}
	if m, _ := w.svc.Get(ctx, fresh.ID); m.Status != events.MachineDeploying {
		t.Fatalf("a deployment within its time was failed: %+v", m)
	}
	// Nothing more to do: a second check fails nothing.
	if failed, err := w.svc.TimeOutDeployments(ctx, 30*time.Minute, 100); err != nil || len(failed) != 0 {
		t.Fatalf("second check: %+v %v", failed, err)
	}
}

func (w *world) commission(m rackplane.Machine) rackplane.Machine {
	w.t.Helper()
	res, err := w.svc.Commission(context.Background(), m.ID, machine.Meta{Actor: "tester"})
	if err != nil {
		w.t.Fatalf("commission %s: %v", m.Hostname, err)
	}
	return res.After
}

// Commissioning boots the ephemeral environment the rack has, names its
// operation, and takes the agent's outcome for that operation alone.
func TestServiceCommissions(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	// A deployed machine that failed is commissioned afresh: its
	// deployment goes.
	m := w.deploy(w.create("node1", "52:54:00:00:03:01"))
	if _, err := w.svc.MarkFailed(ctx, m.ID, "stuck", machine.Meta{}); err != nil {
		t.Fatal(err)
	}
	c := w.commission(m)
	if c.Status != events.MachineCommissioning || c.DeploymentID == nil || *c.DeploymentID == *m.DeploymentID ||
		c.OS != "" || c.DeployRackID != nil || c.StatusReason != "" {
		t.Fatalf("commissioning %+v", c)
	}
	b, err := w.db.BootDecision(ctx, "52:54:00:00:03:01")
	if err != nil || b == nil || b.Purpose != events.BootPurposeCommission || b.DeploymentID != *c.DeploymentID ||
		b.Kernel != machinetest.EnvironmentVersionID+"/vmlinuz" || b.RackID != machinetest.RackID {
		t.Fatalf("boot decision %+v (%v)", b, err)
	}
	// A commission while commissioning is refused with the lifecycle's
	// hint; so is a report for the deployment before.
	if _, err := w.svc.Commission(ctx, m.ID, machine.Meta{}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("commission while commissioning: %v", err)
	}
	if _, err := w.svc.CommissioningReported(ctx, m.ID, *m.DeploymentID, true, "", machine.Meta{}); !errors.Is(err, machine.ErrMovedOn) {
		t.Fatalf("report for the earlier operation: %v", err)
	}
	res, err := w.svc.CommissioningReported(ctx, m.ID, *c.DeploymentID, true, "inventory taken", machine.Meta{})
	if err != nil || res.After.Status != events.MachineReady {
		t.Fatalf("success report: %+v %v", res.After, err)
	}
	if b, _ := w.db.BootDecision(ctx, "52:54:00:00:03:01"); b == nil || b.Purpose != events.BootPurposeLocal {
		t.Fatalf("after commissioning the machine boots %+v, want local", b)
	}
	// A retried report changes nothing.
	if res, err := w.svc.CommissioningReported(ctx, m.ID, *c.DeploymentID, true, "", machine.Meta{}); err != nil || res.Changed {
		t.Fatalf("retried report: %+v %v", res, err)
	}

	// Failure: failed, with the agent's message.
	c = w.commission(res.After)
	res, err = w.svc.CommissioningReported(ctx, m.ID, *c.DeploymentID, false, "no disks found", machine.Meta{})
	if err != nil || res.After.Status != events.MachineFailed || res.After.StatusReason != "commissioning failed: no disks found" {
		t.Fatalf("failure report: %+v %v", res.After, err)
	}

	// A message at the agent's bound: the reason keeps what failed and
	// why, within its own bound.
	c = w.commission(res.After)
	long := "commissioning script 20-fail exited 1: " + strings.Repeat("disk sda: bad ", events.MaxAgentMessage/14)
	long = strings.ToValidUTF8(long[:events.MaxAgentMessage-len("RP-END")], "") + "RP-END"
	res, err = w.svc.CommissioningReported(ctx, m.ID, *c.DeploymentID, false, long, machine.Meta{})
	r := res.After.StatusReason
	if err != nil || res.After.Status != events.MachineFailed || len(r) > 1024 || !utf8.ValidString(r) ||
		!strings.HasPrefix(r, "commissioning failed: commissioning script 20-fail exited 1: ") || !strings.HasSuffix(r, "RP-END") {
		t.Fatalf("failure report with a long message: %+v %v", res.After, err)
	}
}

// Without the ephemeral environment for the machine's arch there is
// nothing to boot: a conflict that says how to get one.
func TestServiceCommissionWithoutEnvironment(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	m := w.create("arm1", "52:54:00:00:04:01")
	arch := "arm64"
	if _, err := w.svc.Update(ctx, m.ID, machine.Change{Arch: &arch}, machine.Meta{}); err != nil {
		t.Fatal(err)
	}
	_, err := w.svc.Commission(ctx, m.ID, machine.Meta{})
	if rackplane.ErrorCode(err) != rackplane.ECONFLICT || !strings.Contains(err.Error(), "import one (os rackplane, release ephemeral, arch arm64)") {
		t.Fatalf("commission without an environment: %v", err)
	}
	if m, _ := w.svc.Get(ctx, m.ID); m.Status != events.MachineReady {
		t.Fatalf("a refused commission changed the machine: %+v", m)
	}
}

func TestServiceTimesOutCommissionings(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	late := w.commission(w.create("late", "52:54:00:00:05:01"))
	w.advance(20 * time.Minute)
	fresh := w.commission(w.create("fresh", "52:54:00:00:05:02"))
	deploying := w.deploy(w.create("deploying", "52:54:00:00:05:03"))
	w.advance(15 * time.Minute)

	failed, err := w.svc.TimeOutCommissionings(ctx, 30*time.Minute, 100)
	if err != nil || len(failed) != 1 || failed[0].ID != late.ID {
		t.Fatalf("timed out %+v, %v; want only %s", failed, err, late.Hostname)
	}
	m, _ := w.svc.Get(ctx, late.ID)
	if m.Status != events.MachineFailed || m.StatusReason != "the commissioning agent did not report within the commissioning timeout of 30m0s" {
		t.Fatalf("timed-out machine: %+v", m)
	}
	for _, id := range []string{fresh.ID, deploying.ID} {
		if m, _ := w.svc.Get(ctx, id); m.Status == events.MachineFailed {
			t.Fatalf("an operation within its time was failed: %+v", m)
		}
	}
	if failed, err := w.svc.TimeOutCommissionings(ctx, 30*time.Minute, 100); err != nil || len(failed) != 0 {
		t.Fatalf("second check: %+v %v", failed, err)
	}
}

// Two changes of one machine at once: both decided on what they read,
// and each applied once, in some order; a pinned version loses with 412.
func TestServiceSerialisesChanges(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	m := w.create("node1", "52:54:00:00:03:01")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = w.svc.MarkBroken(ctx, m.ID, "race", machine.Meta{})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case rackplane.ErrorCode(err) != rackplane.ECONFLICT:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 8 concurrent mark-broken went through, want exactly 1: %v", ok, errs)
	}
	stale := m.Version
	if _, err := w.svc.MarkFixed(ctx, m.ID, machine.Meta{IfMatch: &stale}); rackplane.ErrorCode(err) != rackplane.EPRECONDITION {
		t.Fatalf("a change at a stale version: %v", err)
	}
}

// TestServiceDiscoveryCapped: boots of unknown MACs make at most
// PerRackPerMinute machines on a rack in any minute, and no more while
// MaxNew discovered machines are new; a refusal is a *DiscoveryCapped
// and makes nothing, and deleting a new machine makes room.
func TestServiceDiscoveryCapped(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	lim := machine.DiscoveryLimits{PerRackPerMinute: 3, MaxNew: 5}
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:05:%02x", i) }
	discover := func(i int) (bool, string) {
		t.Helper()
		made, err := w.svc.Discover(ctx, mac(i), machinetest.RackID, lim, machine.Meta{Actor: "system:discovery"})
		var capped *machine.DiscoveryCapped
		switch {
		case errors.As(err, &capped):
			return made, capped.Limit
		case err != nil:
			t.Fatalf("discover %s: %v", mac(i), err)
		}
		return made, ""
	}
	steps := []struct {
		advance time.Duration
		mac     int
		made    bool
		limit   string
	}{
		{0, 1, true, ""}, {0, 2, true, ""}, {0, 3, true, ""},
		{0, 4, false, machine.LimitRackRate},
		{0, 1, false, ""}, // known already: no machine, no refusal
		{59 * time.Second, 4, false, machine.LimitRackRate},
		{2 * time.Second, 4, true, ""}, // a minute after the first three
		{0, 5, true, ""},
		{time.Minute, 6, false, machine.LimitNew}, // five new discovered machines
	}
	for i, st := range steps {
		w.advance(st.advance)
		if made, limit := discover(st.mac); made != st.made || limit != st.limit {
			t.Fatalf("step %d, %s: made %v, refused by %q; want %v, %q", i, mac(st.mac), made, limit, st.made, st.limit)
		}
	}
	ms, err := w.svc.List(ctx, machine.Filter{Status: events.MachineNew})
	if err != nil || len(ms) != 5 {
		t.Fatalf("%d new machines (%v), want 5", len(ms), err)
	}
	if _, err := w.svc.Delete(ctx, ms[0].ID, machine.Meta{Actor: "tester"}); err != nil {
		t.Fatal(err)
	}
	if made, limit := discover(6); !made {
		t.Fatalf("after deleting a new machine: refused by %q", limit)
	}
}

func TestServiceDiscoversOnce(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	made := make([]bool, 4)
	for i := range made {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			made[i], err = w.svc.Discover(ctx, "52-54-00-00-04-01", machinetest.RackID, machine.DiscoveryLimits{}, machine.Meta{Actor: "system:discovery"})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, ok := range made {
		if ok {
			n++
		}
	}
	ms, err := w.svc.List(ctx, machine.Filter{MAC: "52:54:00:00:04:01"})
	if n != 1 || err != nil || len(ms) != 1 || ms[0].Status != events.MachineNew || ms[0].Origin != "discovered" {
		t.Fatalf("%d discoveries made %+v (%v); want one new machine", n, ms, err)
	}
	if _, err := w.svc.List(ctx, machine.Filter{Status: "bogus"}); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Fatalf("an unknown status filter: %v", err)
	}
}

// A release that does not say how to erase, of a machine erasing, does
// not abandon the erase when the region's default is none: only a release
// with erase none, the operator's word, does; a release with an erase
// starts it again.
func TestServiceReleaseWhileErasing(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	m := w.deploy(w.create("wipe1", "52:54:00:00:07:01"))
	res, err := w.svc.Release(ctx, m.ID, machine.ReleaseRequest{Erase: events.EraseQuick}, machine.Meta{})
	if err != nil || res.After.Status != events.MachineErasing {
		t.Fatalf("release with erase quick: %+v %v", res.After, err)
	}
	erase := *res.After.DeploymentID

	_, err = w.svc.Release(ctx, m.ID, machine.ReleaseRequest{}, machine.Meta{})
	if rackplane.ErrorCode(err) != rackplane.ECONFLICT || !strings.Contains(err.Error(), "erase none") {
		t.Fatalf("release without erase while erasing: %v, want a conflict naming erase none", err)
	}
	if m, _ := w.svc.Get(ctx, m.ID); m.Status != events.MachineErasing || *m.DeploymentID != erase {
		t.Fatalf("a release without erase changed the erasing machine: %+v", m)
	}

	// With an erase, it starts again; with erase none, it is abandoned.
	res, err = w.svc.Release(ctx, m.ID, machine.ReleaseRequest{Erase: events.EraseFull}, machine.Meta{})
	if err != nil || res.After.Status != events.MachineErasing || *res.After.DeploymentID == erase {
		t.Fatalf("release with erase full while erasing: %+v %v", res.After, err)
	}
	res, err = w.svc.Release(ctx, m.ID, machine.ReleaseRequest{Erase: events.EraseNone}, machine.Meta{})
	if err != nil || res.After.Status != events.MachineReady {
		t.Fatalf("release with erase none while erasing: %+v %v", res.After, err)
	}
}

// With auto-commission a discovered machine is commissioning at once,
// then failed when nothing answers: it still counts against MaxNew until
// it was commissioned, or boots of ever new MACs would make machines
// without end.
func TestServiceDiscoveryCappedWithAutoCommission(t *testing.T) {
	w := newWorld(t)
	w.svc.SetAutoCommission(true)
	ctx := context.Background()
	lim := machine.DiscoveryLimits{MaxNew: 2}
	for i := range 3 {
		mac := fmt.Sprintf("52:54:00:00:08:%02x", i)
		made, err := w.svc.Discover(ctx, mac, machinetest.RackID, lim, machine.Meta{Actor: "system:discovery"})
		var capped *machine.DiscoveryCapped
		switch {
		case i < 2 && (err != nil || !made):
			t.Fatalf("discover %s: made %v, %v", mac, made, err)
		case i == 2 && (!errors.As(err, &capped) || capped.Limit != machine.LimitNew):
			t.Fatalf("discover %s past MaxNew with its two machines commissioning: made %v, %v", mac, made, err)
		}
	}
	ms, err := w.svc.List(ctx, machine.Filter{Status: events.MachineCommissioning})
	if err != nil || len(ms) != 2 {
		t.Fatalf("%d machines commissioning (%v), want 2", len(ms), err)
	}
	// Failed by the commissioning timeout, never commissioned: they
	// still count.
	w.advance(time.Hour)
	if failed, err := w.svc.TimeOutCommissionings(ctx, 30*time.Minute, 10); err != nil || len(failed) != 2 {
		t.Fatalf("timed out %d (%v), want 2", len(failed), err)
	}
	var capped *machine.DiscoveryCapped
	if _, err := w.svc.Discover(ctx, "52:54:00:00:08:09", machinetest.RackID, lim, machine.Meta{}); !errors.As(err, &capped) {
		t.Fatalf("discover past MaxNew with two discovered machines failed, never commissioned: %v", err)
	}
}
