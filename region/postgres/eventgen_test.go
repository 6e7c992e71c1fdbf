package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// eventGen makes a log that looks like a region's of some months: a few
// racks that register, heartbeat, go offline and back, drop events and
// report boot telemetry and DHCP leases; machines that are created, given
// power parameters, commissioned, deployed, released, broken and fixed,
// deleted and replaced, with their power state and boot decisions.
// Rack chatter dominates, as it does in a real log. It is deterministic
// for a seed, but for the events' ids.
type eventGen struct {
	rnd      *rand.Rand
	now      time.Time
	racks    []string
	machines []*genMachine
	serial   int
}

type genMachine struct {
	id, mac, rack string
	serial        int
	status        string
	power         string
}

func newEventGen(seed uint64, racks, machines int) *eventGen {
	g := &eventGen{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now: time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)}
	for range racks {
		g.racks = append(g.racks, g.uuid())
	}
	for range machines {
		g.machines = append(g.machines, g.newMachine())
	}
	return g
}

func (g *eventGen) uuid() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(g.rnd.Uint32())
	}
	u, _ := uuid.FromBytes(b[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

func (g *eventGen) newMachine() *genMachine {
	g.serial++
	return &genMachine{id: g.uuid(), serial: g.serial, mac: fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(g.serial>>24), byte(g.serial>>16), byte(g.serial>>8), byte(g.serial)),
		rack: g.racks[g.rnd.IntN(len(g.racks))]}
}

func (g *eventGen) ev(source, typ, subject string, data any) events.Event {
	e, err := events.New(source, typ, subject, g.now, data)
	if err != nil {
		panic(err)
	}
	return e
}

func (g *eventGen) region(typ string, m *genMachine, data any) events.Event {
	return g.ev(events.RegionSource, typ, events.MachineStreamName(m.id), data)
}

// all makes n events: the racks' registrations and subnets, the
// machines' creation, then the day-to-day mix.
func (g *eventGen) all(n int) []events.Event {
	out := make([]events.Event, 0, n)
	emit := func(e ...events.Event) { out = append(out, e...) }
	for i, r := range g.racks {
		emit(g.registered(r, i), g.capabilities(r))
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i))
		sid := g.uuid()
		emit(g.ev(events.RegionSource, events.TypeSubnetSet, events.SubnetStreamName(sid), events.SubnetSet{SubnetID: sid, RackID: r,
			Subnet: events.Subnet{CIDR: p, Ranges: []events.SubnetRange{{Start: p.Addr().Next(), End: netip.MustParseAddr(fmt.Sprintf("10.%d.255.250", i))}}}}))
	}
	for _, m := range g.machines {
		emit(g.created(m)...)
	}
	for len(out) < n {
		g.now = g.now.Add(time.Duration(20+g.rnd.IntN(60)) * time.Millisecond)
		emit(g.next()...)
	}
	return out[:n]
}

func (g *eventGen) registered(rack string, i int) events.Event {
	return g.ev(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), events.RackRegistered{
		Name: fmt.Sprintf("rack-%d", i), Version: "1.4.0", Hostname: fmt.Sprintf("rack%d.dc1", i),
		Addresses: []string{fmt.Sprintf("10.%d.0.1", i)}, TFTP: []string{fmt.Sprintf("10.%d.0.1:69", i)},
		HTTP: []string{fmt.Sprintf("http://10.%d.0.1:5248", i)}, HeartbeatIntervalMS: 10000, StartedAt: g.now})
}

func (g *eventGen) capabilities(rack string) events.Event {
	var rels []events.Release
	for _, r := range []string{"jammy", "noble"} {
		var arches []events.Arch
		for _, a := range []string{"amd64", "arm64"} {
			arches = append(arches, events.Arch{Arch: a, Subarch: "generic", Versions: []events.ImageVersion{{
				ID: "ubuntu/" + r + "/" + a + "/20260101", Label: "stable", Version: "20260101",
				Files: []events.ImageFile{{Name: "linux"}, {Name: "initrd"}}}}})
		}
		rels = append(rels, events.Release{Name: r, Title: "Ubuntu " + r, Default: r == "noble", CanCommission: true, Arches: arches})
	}
	return g.ev(events.RackSource(rack), events.TypeCapabilitiesReported, events.RackStreamName(rack), events.Capabilities{
		Digest: fmt.Sprintf("sha256:%016x", g.rnd.Uint64()), OSes: []events.OS{{Name: "ubuntu", Title: "Ubuntu", Releases: rels}},
		Bootloaders: []events.Bootloader{}, StorageProviders: []events.StorageProvider{}})
}

func (g *eventGen) created(m *genMachine) []events.Event {
	m.status, m.power = "new", "off"
	return []events.Event{
		g.region(events.TypeMachineCreated, m, events.MachineState{MachineID: m.id, Hostname: "node-" + m.id[:8],
			MACs: []string{m.mac}, Arch: "amd64", BootRackID: m.rack, Origin: "api", Status: "new"}),
		g.region(events.TypePowerParametersSet, m, events.PowerParametersSet{MachineID: m.id, Driver: "ipmi",
			Address: "10.250." + fmt.Sprint(g.serial%250) + ".10", Port: 623, Username: "admin", RackID: m.rack, PasswordSet: true}),
	}
}

func (g *eventGen) next() []events.Event {
	rack := g.racks[g.rnd.IntN(len(g.racks))]
	m := g.machines[g.rnd.IntN(len(g.machines))]
	src := events.RackSource(rack)
	switch x := g.rnd.IntN(1000); {
	case x < 350:
		return []events.Event{g.ev(src, events.TypeHeartbeat, events.RackStreamName(rack), events.Heartbeat{Seq: int64(g.rnd.Uint32()), IntervalMS: 10000})}
	case x < 550:
		file := []string{"grubx64.efi", "pxelinux.0", "grub/grub.cfg-" + m.mac, "ubuntu/amd64/ga-24.04/noble/stable/20260101/linux"}[g.rnd.IntN(4)]
		if g.rnd.IntN(2) == 0 {
			return []events.Event{g.ev(src, events.TypeBootHandoff, events.MachineStreamName(m.id), events.BootHandoff{Protocol: "tftp",
				Remote: "10.0.3.7:2070", FileName: file, Route: "static", MAC: m.mac, MachineID: m.id, Size: 1 << 20, LatencyUS: 120})}
		}
		return []events.Event{g.ev(src, events.TypeBootTransfer, events.MachineStreamName(m.id), events.BootTransfer{Protocol: "tftp",
			Remote: "10.0.3.7:2070", FileName: file, Route: "static", MachineID: m.id, Bytes: 1 << 20, Size: 1 << 20, DurationMS: 80, BlockSize: 1468})}
	case x < 650:
		return []events.Event{g.leases(rack)}
	case x < 730:
		return g.power(m)
	case x < 740:
		return []events.Event{g.ev(src, events.TypeEventsDropped, events.RackStreamName(rack), events.EventsDropped{Count: int64(1 + g.rnd.IntN(50)), Since: g.now.Add(-time.Minute)})}
	case x < 745:
		hb := g.now.Add(-30 * time.Second)
		off := g.ev(events.RegionSource, events.TypeRackOffline, events.RackStreamName(rack), events.RackLiveness{RackID: rack, LastHeartbeat: &hb, Reason: "heartbeats stopped"})
		g.now = g.now.Add(time.Second)
		on := g.ev(events.RegionSource, events.TypeRackOnline, events.RackStreamName(rack), events.RackLiveness{RackID: rack, LastHeartbeat: &g.now})
		return []events.Event{off, on}
	case x < 747:
		// A rack restarts: it registers and reports what it can boot.
		return []events.Event{g.registered(rack, slicesIndex(g.racks, rack)), g.capabilities(rack)}
	case x < 752:
		return []events.Event{g.region(events.TypeMachineTagsSet, m, events.MachineTags{MachineID: m.id, Tags: []string{"rack-" + m.rack[:4], []string{"gpu", "storage", "web"}[g.rnd.IntN(3)]}})}
	default:
		return g.lifecycle(m)
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func (g *eventGen) leases(rack string) events.Event {
	i := slicesIndex(g.racks, rack)
	var ch []events.DHCPLeaseChange
	for range 1 + g.rnd.IntN(4) {
		m := g.machines[g.rnd.IntN(len(g.machines))]
		exp := g.now.Add(time.Hour)
		// A machine keeps its address, but now and then gets another.
		ip := fmt.Sprintf("10.%d.%d.%d", i, m.serial/250%250, 1+m.serial%250)
		if g.rnd.IntN(10) == 0 {
			ip = fmt.Sprintf("10.%d.%d.%d", i, g.rnd.IntN(250), 1+g.rnd.IntN(250))
		}
		c := events.DHCPLeaseChange{Action: events.DHCPAcked, MAC: m.mac, IP: ip,
			Subnet: fmt.Sprintf("10.%d.0.0/16", i), Hostname: "node-" + m.id[:8], Expires: &exp, Count: 1, At: g.now}
		if g.rnd.IntN(5) == 0 {
			c.Action, c.Expires = events.DHCPReleased, nil
		}
		ch = append(ch, c)
	}
	d := events.DHCPLeasesChanged{Mode: "managed", Since: g.now.Add(-time.Minute), Changes: ch}
	if g.rnd.IntN(20) == 0 {
		d.Until = g.now
	}
	return g.ev(events.RackSource(rack), events.TypeDHCPLeasesChanged, events.RackStreamName(rack), d)
}

func (g *eventGen) power(m *genMachine) []events.Event {
	state := []string{"on", "off"}[g.rnd.IntN(2)]
	if g.rnd.IntN(2) == 0 {
		return []events.Event{g.ev(events.RackSource(m.rack), events.TypePowerActionCompleted, events.MachineStreamName(m.id), events.PowerActionCompleted{
			MachineID: m.id, Driver: "ipmi", Action: events.PowerStatus, State: state, OK: true, Outcome: "ok", StartedAt: g.now.Add(-time.Second), DurationMS: 300})}
	}
	prev := m.power
	m.power = state
	return []events.Event{g.region(events.TypePowerStateChanged, m, events.PowerStateChanged{MachineID: m.id, RackID: m.rack, Driver: "ipmi",
		State: state, PreviousState: prev, Outcome: "ok", CheckedAt: g.now})}
}

// lifecycle moves a machine one step on.
func (g *eventGen) lifecycle(m *genMachine) []events.Event {
	ref := events.MachineRef{MachineID: m.id}
	step := func(typ, status string) []events.Event {
		m.status = status
		return []events.Event{g.region(typ, m, ref)}
	}
	switch m.status {
	case "new":
		return step(events.TypeMachineCommissioning, "commissioning")
	case "commissioning":
		if g.rnd.IntN(20) == 0 {
			ref.Reason = "commissioning script failed"
			return step(events.TypeMachineFailed, "failed")
		}
		return step(events.TypeMachineCommissioned, "ready")
	case "ready":
		switch g.rnd.IntN(30) {
		case 0:
			// Deleted, and a new machine takes its place in the rack.
			del := step(events.TypeMachineDeleted, "gone")
			n := g.newMachine()
			m.id, m.mac, m.rack, m.serial = n.id, n.mac, n.rack, n.serial
			return append(del, g.created(m)...)
		case 1:
			return []events.Event{g.region(events.TypeMachineUpdated, m, events.MachineState{MachineID: m.id, Hostname: "node-" + m.id[:8] + "-b",
				MACs: []string{m.mac}, Arch: "amd64", BootRackID: m.rack})}
		}
		m.status = "deploying"
		return []events.Event{
			g.region(events.TypeMachineDeploying, m, events.Deployment{MachineID: m.id, OS: "ubuntu", Release: "noble", Arch: "amd64",
				Subarch: "generic", ImageVersionID: "20260101", RackID: m.rack, PreseedName: "default", PreseedVersion: 1}),
			g.ev(events.RegionSource, events.TypeBootDecisionSet, events.MachineStreamName(m.id), events.BootDecision{MAC: m.mac, MachineID: m.id,
				Purpose: "deploy", Arch: "amd64", Kernel: "linux", Initrd: "initrd", ImageVer: "20260101"}),
		}
	case "deploying":
		if g.rnd.IntN(15) == 0 {
			ref.Reason = "installer failed"
			return step(events.TypeMachineFailed, "failed")
		}
		return step(events.TypeMachineDeployed, "deployed")
	case "deployed":
		if g.rnd.IntN(10) == 0 {
			ref.Reason = "disk errors"
			return step(events.TypeMachineBroken, "broken")
		}
		return append(step(events.TypeMachineReleasing, "releasing"),
			g.ev(events.RegionSource, events.TypeBootDecisionCleared, events.MachineStreamName(m.id), events.BootDecisionCleared{MAC: m.mac}))
	case "releasing":
		return step(events.TypeMachineReleased, "ready")
	case "broken":
		return step(events.TypeMachineFixed, "deployed")
	default: // failed
		return step(events.TypeMachineCommissioning, "commissioning")
	}
}

// loadLog writes evs straight into the log, as appends of batch events
// would have, but without projecting them: what a rebuild reads.
func loadLog(ctx context.Context, db *postgres.DB, evs []events.Event) error {
	versions := map[string]int64{}
	return pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error {
		i := 0
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"events"},
			[]string{"id", "stream", "version", "type", "source", "time", "actor", "data"},
			pgx.CopyFromFunc(func() ([]any, error) {
				if i == len(evs) {
					return nil, nil
				}
				e := evs[i]
				i++
				versions[e.Subject]++
				var actor *string
				if e.Source == events.RegionSource {
					a := "token:bench"
					actor = &a
				}
				return []any{e.ID, e.Subject, versions[e.Subject], e.Type, e.Source, e.Time, actor, string(e.Data)}, nil
			}))
		if err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		names := make([]string, 0, len(versions))
		vs := make([]int64, 0, len(versions))
		for s, v := range versions {
			names, vs = append(names, s), append(vs, v)
		}
		_, err = tx.Exec(ctx, `INSERT INTO streams (name, version) SELECT * FROM unnest($1::text[], $2::bigint[])
			ON CONFLICT (name) DO UPDATE SET version = streams.version + excluded.version`, names, vs)
		return err
	})
}
