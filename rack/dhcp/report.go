package dhcp

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
)

// Reasons a packet is not answered: labels of the ignored counters, in
// metrics and in the dhcp_leases_changed event.
const (
	ReasonNotNetboot      = "not_netboot"      // proxy: not a PXE or HTTP boot client
	ReasonUnsupportedArch = "unsupported_arch" // no boot loader for its architecture
	ReasonNotOwner        = "not_owner"        // proxy: another rack of the segment answers it
	ReasonOtherServer     = "other_server"     // addressed to another DHCP server
	ReasonNoSubnet        = "no_subnet"        // managed: from no subnet of this rack
	ReasonNoAddress       = "no_address"       // managed: the pool is exhausted
	ReasonOfferLimit      = "offer_limit"      // managed: too many offers outstanding
	ReasonMessageType     = "message_type"     // a message this mode does not answer
	ReasonError           = "error"            // the rack failed (disk, socket)
)

// changeKey coalesces changes of one interval.
type changeKey struct {
	action, mac, ip string
}

// reporter gathers what the server did and hands it out once per interval
// as one event. Its memory is bounded: at most maxChanges entries, the
// rest only counted.
type reporter struct {
	mode       Mode
	maxChanges int

	mu        sync.Mutex
	since     time.Time
	changes   map[changeKey]*events.DHCPLeaseChange
	more      int64
	ignored   map[string]int64
	malformed int64
}

func newReporter(mode Mode, maxChanges int, now time.Time) *reporter {
	return &reporter{mode: mode, maxChanges: maxChanges, since: now,
		changes: map[changeKey]*events.DHCPLeaseChange{}, ignored: map[string]int64{}}
}

// maxBootFile is the longest boot file an event carries (its schema's limit).
const maxBootFile = 255

func (r *reporter) change(c events.DHCPLeaseChange) {
	if len(c.BootFile) > maxBootFile {
		c.BootFile = c.BootFile[:maxBootFile]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := changeKey{c.Action, c.MAC, c.IP}
	if cur, ok := r.changes[k]; ok {
		cur.Count++
		cur.At, cur.Expires, cur.BootFile, cur.Hostname = c.At, c.Expires, c.BootFile, c.Hostname
		return
	}
	if len(r.changes) >= r.maxChanges {
		r.more++
		return
	}
	c.Count = 1
	r.changes[k] = &c
}

func (r *reporter) ignore(reason string) {
	r.mu.Lock()
	r.ignored[reason]++
	r.mu.Unlock()
}

func (r *reporter) malformedPacket() {
	r.mu.Lock()
	r.malformed++
	r.mu.Unlock()
}

// flush returns what happened since the last flush, or nil when nothing
// did, and starts a new interval.
func (r *reporter) flush(now time.Time) *events.DHCPLeasesChanged {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.changes) == 0 && r.more == 0 && len(r.ignored) == 0 && r.malformed == 0 {
		r.since = now
		return nil
	}
	ev := &events.DHCPLeasesChanged{Mode: string(r.mode), Since: r.since.UTC(), Until: now.UTC(),
		MoreChanges: r.more, Malformed: r.malformed}
	for _, c := range r.changes {
		ev.Changes = append(ev.Changes, *c)
	}
	sort.Slice(ev.Changes, func(i, j int) bool { return ev.Changes[i].At.Before(ev.Changes[j].At) })
	if len(r.ignored) > 0 {
		ev.Ignored = r.ignored
	}
	r.since, r.changes, r.more, r.ignored, r.malformed = now, map[changeKey]*events.DHCPLeaseChange{}, 0, map[string]int64{}, 0
	return ev
}

// metrics are the server's Prometheus metrics.
type metrics struct {
	packets   *prometheus.CounterVec // type, outcome
	malformed prometheus.Counter
	leases    *prometheus.CounterVec // operation
	inUse     *prometheus.GaugeVec   // subnet
	skipped   prometheus.Counter
}

// Outcomes of a packet (label of rackplane_dhcp_packets_total).
const (
	outcomeReplied = "replied"
	outcomeIgnored = "ignored"
	outcomeNAK     = "nak"
	outcomeError   = "error"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_dhcp_packets_total",
			Help: "DHCP packets received, by message type (discover, request, decline, release, inform, other) and outcome (replied, nak, ignored, error).",
		}, []string{"type", "outcome"}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_dhcp_malformed_packets_total",
			Help: "Packets on the DHCP ports that were not DHCP requests, dropped.",
		}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_dhcp_lease_operations_total",
			Help: "DHCP lease operations: offer, ack, nak (sent), release, decline (received and applied), boot_offer and boot_ack (proxy mode).",
		}, []string{"operation"}),
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rackplane_dhcp_leases_in_use",
			Help: "Unexpired leases of each managed subnet.",
		}, []string{"subnet"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_dhcp_region_subnets_skipped_total",
			Help: "Subnets from the region not served: invalid, without an interface, or overlapping a subnet of the rack's own file or another one.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.packets, m.malformed, m.leases, m.inUse, m.skipped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("dhcp: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
