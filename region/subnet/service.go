package subnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Store is what the service needs of the region's database; the region's
// postgres package implements it.
type Store interface {
	GetSubnet(ctx context.Context, id string) (postgres.Subnet, error)
	ListSubnets(ctx context.Context, rackID string) ([]postgres.Subnet, error)
	// SaveSubnet appends ev at version expected, refusing a rack that
	// does not exist and a subnet that overlaps another of its rack.
	SaveSubnet(ctx context.Context, expected int64, ev events.Event) error
	// HostnamesByMAC returns the hostnames of the machines that have
	// any of macs, by MAC: one query for all of a subnet's reservations.
	HostnamesByMAC(ctx context.Context, macs []string) (map[string]string, error)
}

// Meta says who asks, in which request, and at which version (If-Match).
type Meta struct {
	Actor         string
	CorrelationID string
	IfMatch       *int64
}

// Fields are a subnet's settings as a client sends them; nil fields stay
// as they are (on create: empty).
type Fields struct {
	RackID        *string                     `json:"rack_id"`
	CIDR          *netip.Prefix               `json:"cidr"`
	Interface     *string                     `json:"interface"`
	Ranges        *[]events.SubnetRange       `json:"ranges"`
	Router        *netip.Addr                 `json:"router"`
	DNSServers    *[]netip.Addr               `json:"dns_servers"`
	Domain        *string                     `json:"domain"`
	SearchDomains *[]string                   `json:"search_domains"`
	LeaseSeconds  *int64                      `json:"lease_seconds"`
	Reservations  *[]events.SubnetReservation `json:"reservations"`
}

func (f Fields) apply(s *postgres.Subnet) {
	if f.RackID != nil {
		s.RackID = *f.RackID
	}
	if f.CIDR != nil {
		s.CIDR = *f.CIDR
	}
	if f.Interface != nil {
		s.Interface = *f.Interface
	}
	if f.Ranges != nil {
		s.Ranges = *f.Ranges
	}
	if f.Router != nil {
		s.Router = *f.Router
	}
	if f.DNSServers != nil {
		s.DNSServers = *f.DNSServers
	}
	if f.Domain != nil {
		s.Domain = *f.Domain
	}
	if f.SearchDomains != nil {
		s.SearchDomains = *f.SearchDomains
	}
	if f.LeaseSeconds != nil {
		s.LeaseSeconds = *f.LeaseSeconds
	}
	if f.Reservations != nil {
		s.Reservations = *f.Reservations
	}
}

// Service keeps subnets.
type Service struct {
	store Store
	now   func() time.Time
	log   *slog.Logger
}

// NewService returns a service on store; now may be nil (time.Now).
func NewService(store Store, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, now: now, log: log}
}

// Get returns a subnet; ENOTFOUND when there is none.
func (s *Service) Get(ctx context.Context, id string) (postgres.Subnet, error) {
	return s.store.GetSubnet(ctx, id)
}

// List returns the subnets of rack rackID, or of every rack ("").
func (s *Service) List(ctx context.Context, rackID string) ([]postgres.Subnet, error) {
	if rackID != "" {
		u, err := uuid.Parse(rackID)
		if err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "rack_id %q is not a UUID", rackID)
		}
		rackID = u.String()
	}
	return s.store.ListSubnets(ctx, rackID)
}

// Create makes a subnet; rack_id and cidr are required.
func (s *Service) Create(ctx context.Context, f Fields, meta Meta) (postgres.Subnet, error) {
	if f.RackID == nil || f.CIDR == nil {
		return postgres.Subnet{}, rackplane.Errorf(rackplane.EINVALID, "rack_id and cidr are required: a subnet is served by one rack")
	}
	sn := postgres.Subnet{ID: uuid.NewString()}
	f.apply(&sn)
	if err := s.save(ctx, sn, postgres.ExpectNoStream, meta); err != nil {
		return postgres.Subnet{}, err
	}
	return s.store.GetSubnet(ctx, sn.ID)
}

// Update changes the fields given of subnet id.
func (s *Service) Update(ctx context.Context, id string, f Fields, meta Meta) (before, after postgres.Subnet, err error) {
	before, err = s.read(ctx, id, meta)
	if err != nil {
		return before, after, err
	}
	sn := before
	sn.Ranges = append([]events.SubnetRange(nil), before.Ranges...)
	sn.Reservations = append([]events.SubnetReservation(nil), before.Reservations...)
	f.apply(&sn)
	if err := s.save(ctx, sn, before.Version, meta); err != nil {
		return before, after, err
	}
	after, err = s.store.GetSubnet(ctx, id)
	return before, after, err
}

// Delete removes subnet id; its rack stops serving it.
func (s *Service) Delete(ctx context.Context, id string, meta Meta) (postgres.Subnet, error) {
	before, err := s.read(ctx, id, meta)
	if err != nil {
		return before, err
	}
	ev, err := s.event(events.TypeSubnetDeleted, id, events.SubnetDeleted{SubnetID: id, RackID: before.RackID, CIDR: before.CIDR.String()}, meta)
	if err != nil {
		return before, err
	}
	return before, s.conflict(s.store.SaveSubnet(ctx, before.Version, ev), id, meta)
}

// read returns the subnet at the version the caller expects, if any.
func (s *Service) read(ctx context.Context, id string, meta Meta) (postgres.Subnet, error) {
	sn, err := s.store.GetSubnet(ctx, id)
	if err != nil {
		return sn, err
	}
	if meta.IfMatch != nil && *meta.IfMatch != sn.Version {
		return sn, rackplane.Errorf(rackplane.EPRECONDITION, "version %d was changed: subnet %s is now at %d", *meta.IfMatch, id, sn.Version)
	}
	return sn, nil
}

// save checks sn and appends its subnet_set at version expected.
func (s *Service) save(ctx context.Context, sn postgres.Subnet, expected int64, meta Meta) error {
	d, err := s.check(ctx, sn)
	if err != nil {
		return err
	}
	ev, err := s.event(events.TypeSubnetSet, sn.ID, d, meta)
	if err != nil {
		return err
	}
	return s.conflict(s.store.SaveSubnet(ctx, expected, ev), sn.ID, meta)
}

// check validates sn and returns it as its event carries it: MACs
// canonical, and a reservation without a hostname named after the
// machine that has its MAC, if one does.
func (s *Service) check(ctx context.Context, sn postgres.Subnet) (events.SubnetSet, error) {
	var problems []string
	rack, err := uuid.Parse(sn.RackID)
	if err != nil {
		problems = append(problems, fmt.Sprintf("rack_id %q: want the UUID of a rack", sn.RackID))
	}
	for _, p := range sn.Subnet.Problems() {
		problems = append(problems, p.Error())
	}
	if len(problems) > 0 {
		return events.SubnetSet{}, rackplane.Errorf(rackplane.EINVALID, "subnet %s: %s", sn.CIDR, strings.Join(problems, "; "))
	}
	d := events.SubnetSet{SubnetID: sn.ID, RackID: rack.String(), Subnet: sn.Subnet}
	// A copy: the reservations are the caller's (Fields), whose slice
	// must not change under it.
	d.Reservations = slices.Clone(d.Reservations)
	var unnamed []string
	for i, r := range d.Reservations {
		mac, _ := events.CanonicalMAC(r.MAC) // validated above
		d.Reservations[i].MAC = mac
		if r.Hostname == "" {
			unnamed = append(unnamed, mac)
		}
	}
	if len(unnamed) == 0 {
		return d, nil
	}
	names, err := s.store.HostnamesByMAC(ctx, unnamed)
	if err != nil {
		return d, err
	}
	for i, r := range d.Reservations {
		if h := names[r.MAC]; r.Hostname == "" && events.ValidHostLabel(h) {
			d.Reservations[i].Hostname = h
		}
	}
	return d, nil
}

func (s *Service) event(typ, id string, data any, meta Meta) (events.Event, error) {
	ev, err := events.New(events.RegionSource, typ, events.SubnetStreamName(id), s.now(), data)
	if err != nil {
		return ev, err
	}
	ev.Actor, ev.CorrelationID = meta.Actor, meta.CorrelationID
	return ev, nil
}

// conflict turns a stale version into what the caller should do.
func (s *Service) conflict(err error, id string, meta Meta) error {
	var ce *postgres.ConflictError
	if !errors.As(err, &ce) {
		return err
	}
	if ce.Expected == postgres.ExpectNoStream {
		return rackplane.WrapError(rackplane.ECONFLICT, err, "subnet %s exists already", id)
	}
	if meta.IfMatch != nil {
		return rackplane.WrapError(rackplane.EPRECONDITION, err, "subnet %s was changed by someone else meanwhile; read it again", id)
	}
	return rackplane.WrapError(rackplane.ECONFLICT, err, "subnet %s was changed by someone else meanwhile; try again", id)
}
