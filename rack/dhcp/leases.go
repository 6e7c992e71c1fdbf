package dhcp

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rackplane/rackplane/events"
)

// pool is the state of one managed subnet.
type pool struct {
	subnet    Subnet
	prefix    netip.Prefix
	leaseTime time.Duration
	// reserved maps a canonical MAC to its reservation, reservedIP an
	// address to its MAC.
	reserved   map[string]Reservation
	reservedIP map[netip.Addr]string
	// byMAC is the address each MAC last held (bound, expired or
	// released): it gets it back while it is free.
	byMAC map[string]netip.Addr
}

func (p *pool) inRanges(ip netip.Addr) bool {
	for _, r := range p.subnet.Ranges {
		if !ip.Less(r.Start) && !r.End.Less(ip) {
			return true
		}
	}
	return false
}

type offer struct {
	ip    netip.Addr
	pool  *pool
	until time.Time
}

// table is every managed subnet's leases and outstanding offers, behind
// one lock. Its size is bounded by the configuration, never by traffic:
// records exist only for addresses of the pools (at most MaxPoolSize
// dynamic ones each, plus reservations) and offers are capped at
// maxOffers.
type table struct {
	mu sync.Mutex
	// pools are the subnets served now (see poolList).
	pools atomic.Pointer[[]*pool]
	// serverIPs are the rack's addresses on the interfaces it serves,
	// never handed out whatever the subnets say. They belong to the
	// table, not to a pool, so a subnet that changes is never without
	// them; an address kept after its listener closed only withholds
	// that one address.
	serverIPs   map[netip.Addr]bool
	leaseTime   time.Duration         // of subnets that give none
	records     map[netip.Addr]Record // every address with a state
	offers      map[string]offer      // by MAC
	offeredIP   map[netip.Addr]string // address → MAC
	maxOffers   int
	offerHold   time.Duration
	declineHold time.Duration
	log         *leaseLog
}

// Errors of the table; the server answers them with a NAK or not at all.
var (
	errNoAddress  = errors.New("no free address")
	errOfferLimit = errors.New("too many outstanding offers")
	errWrongAddr  = errors.New("address not available to this client")
	errNoSubnet   = errors.New("no subnet served there any more")
)

func newTable(cfg Config, path string) (*table, int, error) {
	t := &table{
		offers: map[string]offer{}, offeredIP: map[netip.Addr]string{}, serverIPs: map[netip.Addr]bool{},
		maxOffers: cfg.MaxOffers, offerHold: cfg.OfferHold, declineHold: cfg.DeclineHold,
		leaseTime: cfg.LeaseTime,
	}
	var bad int
	var err error
	t.log, t.records, bad, err = openLeaseLog(path)
	if err != nil {
		return nil, 0, err
	}
	t.mu.Lock()
	t.setPoolsLocked(cfg.Subnets)
	t.mu.Unlock()
	return t, bad, nil
}

// setPools makes subnets the table's pools. Leases stay (an address
// that left every pool keeps its record, in case its subnet comes back);
// offers of addresses no pool holds any more are dropped.
func (t *table) setPools(subnets []Subnet) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setPoolsLocked(subnets)
}

func (t *table) setPoolsLocked(subnets []Subnet) {
	pools := make([]*pool, 0, len(subnets))
	for _, s := range subnets {
		p := &pool{subnet: s, prefix: s.CIDR, leaseTime: t.leaseTime,
			reserved: map[string]Reservation{}, reservedIP: map[netip.Addr]string{}, byMAC: map[string]netip.Addr{}}
		if s.LeaseSeconds > 0 {
			p.leaseTime = time.Duration(s.LeaseSeconds) * time.Second
		}
		for _, r := range s.Reservations {
			mac, _ := events.CanonicalMAC(r.MAC) // validated
			r.MAC = mac
			p.reserved[mac] = r
			p.reservedIP[r.IP] = mac
		}
		pools = append(pools, p)
	}
	t.pools.Store(&pools)
	for ip, r := range t.records {
		if p := t.poolOf(ip); p != nil && r.MAC != "" {
			if old, ok := p.byMAC[r.MAC]; !ok || t.records[old].Until.Before(r.Until) {
				p.byMAC[r.MAC] = ip
			}
		}
	}
	for mac, o := range t.offers {
		if p := t.poolOf(o.ip); p == nil || p.prefix != o.pool.prefix {
			t.dropOffer(mac)
		} else {
			o.pool = p
			t.offers[mac] = o
		}
	}
}

func (t *table) close() error { return t.log.close() }

// addServerIP keeps ip, the rack's own address, out of every pool.
func (t *table) addServerIP(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.serverIPs[ip] = true
}

// lockedPoolOf is the pool at is in, looked up with t.mu held: the
// lease operations find their pool this way, not from a pool the caller
// saw earlier, because the subnets may have changed in between and a
// lease made in a replaced pool is missing from its successor's byMAC
// (the client would get another address next time).
func (t *table) lockedPoolOf(at netip.Addr) (*pool, error) {
	if p := t.poolOf(at); p != nil {
		return p, nil
	}
	return nil, errNoSubnet
}

// poolList is the current pools; it is replaced whole, never changed,
// so a reader needs no lock.
func (t *table) poolList() []*pool {
	if ps := t.pools.Load(); ps != nil {
		return *ps
	}
	return nil
}

// poolOf returns the pool whose subnet holds ip.
func (t *table) poolOf(ip netip.Addr) *pool {
	for _, p := range t.poolList() {
		if p.prefix.Contains(ip) {
			return p
		}
	}
	return nil
}

// available reports whether ip may be handed to mac now.
func (t *table) available(p *pool, ip netip.Addr, mac string, now time.Time) bool {
	if !p.prefix.Contains(ip) || ip == p.prefix.Addr() || ip == lastAddr(p.prefix) ||
		t.serverIPs[ip] || ip == p.subnet.Router {
		return false
	}
	if owner, ok := p.reservedIP[ip]; ok {
		return owner == mac
	}
	if _, ok := p.reserved[mac]; ok {
		return false // a reserved client gets its reservation only
	}
	if !p.inRanges(ip) {
		return false
	}
	if m, ok := t.offeredIP[ip]; ok && m != mac && now.Before(t.offers[m].until) {
		return false
	}
	r, ok := t.records[ip]
	if !ok {
		return true
	}
	switch r.State {
	case StateBound:
		return r.MAC == mac || !now.Before(r.Until)
	case StateDeclined:
		return !now.Before(r.Until)
	}
	return true // released
}

// freeRank orders candidates: never used, then released, then declined
// whose hold is over, then expired leases (whose client may come back),
// each oldest first.
func (t *table) freeRank(ip netip.Addr) (int, time.Time) {
	r, ok := t.records[ip]
	if !ok {
		return 0, time.Time{}
	}
	switch r.State {
	case StateReleased:
		return 1, r.Until
	case StateDeclined:
		return 2, r.Until
	}
	return 3, r.Until
}

// offer picks an address for mac in the pool at is in and holds it for
// offerHold: its reservation, its outstanding offer, the address it last
// held, the address it asks for, or the best free one. It returns the
// pool too.
func (t *table) offer(at netip.Addr, mac string, requested netip.Addr, now time.Time) (netip.Addr, *pool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.lockedPoolOf(at)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	// The limit comes first: a flood of new clients is refused before
	// the pool is searched for them.
	if _, renewing := t.offers[mac]; !renewing && len(t.offers) >= t.maxOffers {
		for m, o := range t.offers {
			if !now.Before(o.until) {
				t.dropOffer(m)
			}
		}
		if len(t.offers) >= t.maxOffers {
			return netip.Addr{}, nil, errOfferLimit
		}
	}
	ip, err := t.pick(p, mac, requested, now)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	t.dropOffer(mac)
	if other, ok := t.offeredIP[ip]; ok {
		t.dropOffer(other) // expired, or available() would have refused ip
	}
	t.offers[mac] = offer{ip: ip, pool: p, until: now.Add(t.offerHold)}
	t.offeredIP[ip] = mac
	return ip, p, nil
}

func (t *table) pick(p *pool, mac string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	if r, ok := p.reserved[mac]; ok {
		if t.available(p, r.IP, mac, now) {
			return r.IP, nil
		}
		return netip.Addr{}, fmt.Errorf("%w: reserved address %s is held by another client", errNoAddress, r.IP)
	}
	if o, ok := t.offers[mac]; ok && o.pool == p && t.available(p, o.ip, mac, now) {
		return o.ip, nil
	}
	if ip, ok := p.byMAC[mac]; ok && t.available(p, ip, mac, now) {
		return ip, nil
	}
	if requested.IsValid() && t.available(p, requested, mac, now) {
		return requested, nil
	}
	var best netip.Addr
	bestRank, bestTime := 4, time.Time{}
	for _, r := range p.subnet.Ranges {
		for v := toU32(r.Start); ; v++ {
			ip := fromU32(v)
			if t.available(p, ip, mac, now) {
				rank, at := t.freeRank(ip)
				if rank == 0 {
					return ip, nil
				}
				if rank < bestRank || rank == bestRank && at.Before(bestTime) {
					best, bestRank, bestTime = ip, rank, at
				}
			}
			if v == toU32(r.End) {
				break
			}
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, errNoAddress
	}
	return best, nil
}

// bind gives ip to mac for the lease time of the pool at is in and
// writes it to disk before returning: a REQUEST is only acknowledged
// once the lease survives a restart. It returns the pool too.
func (t *table) bind(at netip.Addr, mac string, ip netip.Addr, hostname string, now time.Time) (Record, *pool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := t.lockedPoolOf(at)
	if err != nil {
		return Record{}, nil, err
	}
	if !t.available(p, ip, mac, now) {
		return Record{}, nil, errWrongAddr
	}
	if r, ok := p.reserved[mac]; ok && r.Hostname != "" {
		hostname = r.Hostname
	}
	rec := Record{IP: ip, MAC: mac, State: StateBound, Until: now.Add(p.leaseTime).UTC().Truncate(time.Second), Hostname: hostname}
	if old, ok := p.byMAC[mac]; ok && old != ip {
		if r := t.records[old]; r.State == StateBound && r.MAC == mac {
			r.State, r.Until = StateReleased, now.UTC()
			if err := t.write(r); err != nil {
				return Record{}, nil, err
			}
		}
	}
	if err := t.write(rec); err != nil {
		return Record{}, nil, err
	}
	p.byMAC[mac] = ip
	t.dropOffer(mac)
	if other, ok := t.offeredIP[ip]; ok {
		t.dropOffer(other) // an expired offer of the address to another client
	}
	return rec, p, nil
}

// write persists r and then applies it.
func (t *table) write(r Record) error {
	if err := t.log.append(r, len(t.records), func() map[netip.Addr]Record {
		all := maps.Clone(t.records)
		all[r.IP] = r
		return all
	}); err != nil {
		return err
	}
	t.records[r.IP] = r
	return nil
}

// forgetOffer drops mac's offer (it chose another server).
func (t *table) forgetOffer(mac string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropOffer(mac)
}

// dropOffer removes mac's offer; t.mu is held. offers and offeredIP
// always mirror each other.
func (t *table) dropOffer(mac string) {
	if o, ok := t.offers[mac]; ok {
		delete(t.offers, mac)
		if t.offeredIP[o.ip] == mac {
			delete(t.offeredIP, o.ip)
		}
	}
}

// release frees ip, in the pool at is in, when mac holds it. It reports
// whether anything changed.
func (t *table) release(at netip.Addr, mac string, ip netip.Addr, now time.Time) (Record, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.poolOf(at)
	r, ok := t.records[ip]
	if p == nil || !ok || r.State != StateBound || r.MAC != mac || !p.prefix.Contains(ip) {
		return Record{}, false, nil
	}
	r.State, r.Until = StateReleased, now.UTC()
	return r, true, t.write(r)
}

// decline marks ip, in the pool at is in, bad for declineHold when mac
// was offered or given it: a client that found it in use says so, and
// nobody gets it meanwhile.
func (t *table) decline(at netip.Addr, mac string, ip netip.Addr, now time.Time) (Record, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.poolOf(at)
	r, bound := t.records[ip]
	offered := t.offeredIP[ip] == mac
	if p == nil || !p.prefix.Contains(ip) || !(offered || bound && r.State == StateBound && r.MAC == mac) {
		return Record{}, false, nil
	}
	if offered {
		t.dropOffer(mac)
	}
	if p.byMAC[mac] == ip {
		delete(p.byMAC, mac)
	}
	r = Record{IP: ip, State: StateDeclined, Until: now.Add(t.declineHold).UTC().Truncate(time.Second)}
	return r, true, t.write(r)
}

// inUse counts each pool's unexpired bound leases.
func (t *table) inUse(now time.Time) map[*pool]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	pools := t.poolList()
	out := make(map[*pool]int, len(pools))
	for _, p := range pools {
		out[p] = 0
	}
	for ip, r := range t.records {
		if r.State == StateBound && now.Before(r.Until) {
			if p := t.poolOf(ip); p != nil {
				out[p]++
			}
		}
	}
	return out
}

// lookup returns the record of ip.
func (t *table) lookup(ip netip.Addr) (Record, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.records[ip]
	return r, ok
}
