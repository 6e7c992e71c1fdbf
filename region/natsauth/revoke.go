package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rackplane/rackplane/region/postgres"
)

// RevokeRack revokes rack rackID's credential (by is who asked) and
// disconnects the connections it has; it returns the credential and how
// many connections were closed. The revocation holds even when the
// disconnection fails (the error says so): the callout refuses the rack
// from now on, on every reconnect.
func (s *Service) RevokeRack(ctx context.Context, rackID, by string) (postgres.RackCredential, int, error) {
	c, err := s.store.RevokeRack(ctx, rackID, by, s.cfg.Now())
	if err != nil {
		return c, 0, err
	}
	s.log.Warn("rack revoked: refusing its connections", "rack_id", rackID, "nkey", c.NKey, "by", by)
	n, err := s.disconnect(ctx, rackID)
	select {
	case s.resweep <- rackID:
	default:
		s.log.Warn("revoked rack: too many revocations at once; not searched for its connections a second time", "rack_id", rackID)
	}
	if err != nil {
		return c, n, fmt.Errorf("rack %s is revoked, but its connections could not be closed (they will be refused when they reconnect): %w", rackID, err)
	}
	if n > 0 {
		s.log.Warn("revoked rack disconnected", "rack_id", rackID, "connections", n)
	}
	return c, n, nil
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
