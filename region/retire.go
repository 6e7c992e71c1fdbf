package region

import (
	"context"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/region/api"
	"github.com/rackplane/rackplane/region/natsauth"
)

// rackRetirer retires a rack in the database and on NATS: natsauth.Service
// with the callout, natsauth.RecordOnly without.
type rackRetirer interface {
	RetireRack(ctx context.Context, rackID, by, reason string) (natsauth.Retirement, error)
}

// RetireRack retires rack rackID on by's word (reason: why, optional). It
// is refused while this region still hears the rack's heartbeats, even
// when the log says it is offline (it came back a moment ago), and, in the
// database, while the rack is online or machines, subnets or volumes
// depend on it (postgres.DB.RetireRack says what to do). Then its NATS
// credential is revoked and its connections closed (natsauth), and the
// consumers through which it followed the region stream are deleted,
// which nothing else would do for three days. Retiring a retired rack
// changes nothing.
func (r *Region) RetireRack(ctx context.Context, rackID, by, reason string) (api.RackRetirement, error) {
	rack, err := r.db.GetRack(ctx, rackID)
	if err != nil {
		return api.RackRetirement{}, err
	}
	if rack.RetiredAt == nil {
		interval := time.Duration(rack.HeartbeatIntervalMS) * time.Millisecond
		if last, beating := r.monitor.Beating(rackID, interval); beating {
			return api.RackRetirement{}, rackplane.Errorf(rackplane.ECONFLICT,
				"rack %s (%s) is still sending heartbeats (the last %s ago): stop its rackd first; it can be retired once it is offline",
				rack.Name, rackID, time.Since(last).Round(time.Millisecond))
		}
	}
	rt, err := r.retirer.RetireRack(ctx, rackID, by, reason)
	res := api.RackRetirement{Retirement: rt}
	if err != nil || rt.AlreadyRetired {
		return res, err
	}
	res.ConsumersDeleted, err = eventbus.DeleteRackConsumers(ctx, r.js, rackID)
	if err != nil {
		// They go by themselves after three idle days; a rack that can no
		// longer connect reads nothing through them meanwhile.
		r.log.Warn("retired rack: its consumers of the region stream could not be deleted", "rack_id", rackID, "err", err)
		res.Warning = joinWarnings(res.Warning, "the rack's consumers of the region stream could not be deleted (they expire after 72h idle): "+err.Error())
	}
	r.log.Info("rack retired", "rack_id", rackID, "name", rt.Name, "by", by, "reason", reason,
		"credential_revoked", rt.Credential != nil, "disconnected", rt.Disconnected, "consumers_deleted", res.ConsumersDeleted)
	return res, nil
}

func joinWarnings(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
