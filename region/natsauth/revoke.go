package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rackplane/rackplane/region/postgres"
)

// Revocation is what revoking a rack did.
type Revocation struct {
	postgres.RackCredential
	// Disconnected is how many of the rack's connections were closed.
	Disconnected int `json:"disconnected"`
	// Warning says what could not be done; the revocation holds anyway.
	Warning string `json:"warning,omitempty"`
}

// RevokeRack revokes rack rackID's credential (by is who asked) and
// disconnects the connections it has. The revocation holds even when the
// disconnection fails (Warning says so): the callout refuses the rack
// from now on, on every reconnect.
func (s *Service) RevokeRack(ctx context.Context, rackID, by string) (Revocation, error) {
	c, err := s.store.RevokeRack(ctx, rackID, by, s.cfg.Now())
	if err != nil {
		return Revocation{}, err
	}
	s.log.Warn("rack revoked: refusing its connections", "rack_id", rackID, "nkey", c.NKey, "by", by)
	rv := Revocation{RackCredential: c}
	rv.Disconnected, rv.Warning = s.cutOff(ctx, rackID, "revoked")
	return rv, nil
}

// cutOff disconnects the connections of rack rackID, whose credential was
// just revoked, now and once more after the server's authentication
// timeout (a connection admitted while the revocation committed registers
// late). It returns how many it closed, and a warning when it could not
// close them: they are refused when they reconnect. what is "revoked" or
// "retired", for the log.
func (s *Service) cutOff(ctx context.Context, rackID, what string) (int, string) {
	n, err := s.disconnect(ctx, rackID)
	select {
	case s.resweep <- rackID:
	default:
		s.log.Warn(what+" rack: too many revocations at once; not searched for its connections a second time", "rack_id", rackID)
	}
	if err != nil {
		s.log.Error(what+" rack: its connections could not be closed; they are refused when they reconnect", "rack_id", rackID, "err", err)
		return n, "the rack is " + what + ", but its connections could not be closed (they are refused when they reconnect): " + err.Error()
	}
	if n > 0 {
		s.log.Warn(what+" rack disconnected", "rack_id", rackID, "connections", n)
	}
	return n, ""
}

// Retirement is what retiring a rack did on NATS and in the database.
type Retirement struct {
	postgres.RackRetirement
	// Disconnected is how many of the rack's connections were closed (an
	// offline rack has none, unless it connected again just now).
	Disconnected int `json:"disconnected"`
	// Warning says what could not be done; the retirement holds anyway.
	Warning string `json:"warning,omitempty"`
}

// RetireRack retires rack rackID (postgres.DB.RetireRack: refused while
// it is online or in use) and, as RevokeRack does, closes whatever
// connections its credential still has: a rack is retired offline, but
// one that came back a moment ago must not stay connected with a revoked
// credential.
func (s *Service) RetireRack(ctx context.Context, rackID, by, reason string) (Retirement, error) {
	res, err := s.store.RetireRack(ctx, rackID, by, reason, s.cfg.Now())
	if err != nil || res.AlreadyRetired {
		return Retirement{RackRetirement: res}, err
	}
	rt := Retirement{RackRetirement: res}
	if res.Credential == nil {
		return rt, nil
	}
	s.log.Warn("rack retired: its credential is revoked, refusing its connections", "rack_id", rackID, "nkey", res.Credential.NKey, "by", by)
	rt.Disconnected, rt.Warning = s.cutOff(ctx, rackID, "retired")
	return rt, nil
}

// RecordOnly revokes racks in the database alone: for a region running
// without the callout (-no-nats-callout), where nothing on NATS would act
// on a revocation.
type RecordOnly struct {
	Store interface {
		RevokeRack(ctx context.Context, rackID, by string, now time.Time) (postgres.RackCredential, error)
		RetireRack(ctx context.Context, rackID, by, reason string, now time.Time) (postgres.RackRetirement, error)
	}
}

// RetireRack records the retirement and says that a revoked credential
// keeps nothing out here.
func (r RecordOnly) RetireRack(ctx context.Context, rackID, by, reason string) (Retirement, error) {
	res, err := r.Store.RetireRack(ctx, rackID, by, reason, time.Now())
	rt := Retirement{RackRetirement: res}
	if err == nil && !res.AlreadyRetired {
		rt.Warning = "the region runs without its NATS auth callout (-no-nats-callout): the rack is retired, but the region keeps nothing off NATS " +
			"(remove the rack's user from the NATS server's configuration); what it sends is not taken into the racks or the OS registry"
	}
	return rt, err
}

// RevokeRack records the revocation and says it keeps nothing out.
func (r RecordOnly) RevokeRack(ctx context.Context, rackID, by string) (Revocation, error) {
	c, err := r.Store.RevokeRack(ctx, rackID, by, time.Now())
	if err != nil {
		return Revocation{}, err
	}
	return Revocation{RackCredential: c, Warning: "the region runs without its NATS auth callout (-no-nats-callout): " +
		"the revocation is recorded, but the region keeps nothing off NATS (remove the rack's user from the NATS server's configuration)"}, nil
}

// The system account's services used here, as nats-server names them.
const (
	connzSubject = "$SYS.REQ.SERVER.PING.CONNZ"
	kickSubject  = "$SYS.REQ.SERVER.%s.KICK"
)

// serverAnswer is a server's answer to a $SYS.REQ.SERVER request.
type serverAnswer struct {
	Server struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"server"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

type connz struct {
	Connections []struct {
		CID     uint64 `json:"cid"`
		User    string `json:"authorized_user"`
		Account string `json:"account"`
	} `json:"connections"`
}

// disconnect closes every connection of rack rackID on every server and
// returns how many it closed.
func (s *Service) disconnect(ctx context.Context, rackID string) (int, error) {
	type conn struct {
		server string
		cid    uint64
	}
	var found []conn
	sys := s.cfg.System
	inbox := sys.NewRespInbox()
	sub, err := sys.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("find connections: %w", err)
	}
	defer sub.Unsubscribe()
	// Filtered by the user name the callout gave the rack's connections,
	// in the racks' account; "auth" makes the server filter by user.
	q, _ := json.Marshal(map[string]any{"auth": true, "user": rackID, "acc": s.cfg.Account, "limit": 1024})
	if err := sys.PublishRequest(connzSubject, inbox, q); err != nil {
		return 0, fmt.Errorf("find connections: %w", err)
	}
	answered := 0
	deadline := time.Now().Add(s.cfg.Gather)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			break // the gathering time is over
		}
		var a serverAnswer
		var cz connz
		if json.Unmarshal(m.Data, &a) != nil || a.Error != nil || json.Unmarshal(a.Data, &cz) != nil {
			s.log.Warn("revoking a rack: a server's connection list is unreadable", "server", a.Server.Name, "answer", clip(string(m.Data)))
			continue
		}
		answered++
		for _, c := range cz.Connections {
			if c.User == rackID && c.Account == s.cfg.Account {
				found = append(found, conn{a.Server.ID, c.CID})
			}
		}
	}
	if answered == 0 {
		return 0, errors.New("find connections: no NATS server answered (is the region's system user in the system account?)")
	}
	var errs []error
	closed := 0
	for _, c := range found {
		body, _ := json.Marshal(map[string]uint64{"cid": c.cid})
		kctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := sys.RequestWithContext(kctx, fmt.Sprintf(kickSubject, c.server), body)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("disconnect %d on %s: %w", c.cid, c.server, err))
			continue
		}
		var a serverAnswer
		if err := json.Unmarshal(m.Data, &a); err != nil {
			errs = append(errs, fmt.Errorf("disconnect %d on %s: %w", c.cid, c.server, err))
			continue
		}
		if a.Error != nil {
			// Gone meanwhile: what was wanted.
			s.log.Debug("revoking a rack: connection already gone", "cid", c.cid, "server", c.server, "err", a.Error.Description)
			continue
		}
		closed++
		s.kicked.Inc()
	}
	return closed, errors.Join(errs...)
}
