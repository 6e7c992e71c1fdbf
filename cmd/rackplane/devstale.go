package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/region/postgres"
)

// What rackplane dev leaves behind when its data directory goes (deleted,
// or dev run from another directory) while the database stays: the API
// token and join token it minted, which the directory held as their only
// copy, and its rack, whose id and nkey were in the directory. A later dev
// cannot use any of them, and nobody should: the tokens are revoked and
// the rack retired, each logged, so that nothing of a dead directory keeps
// working silently or stands beside the new rack under the same name.
//
// dev records the directory a token is minted for in its created_by
// ("rackplane-dev <dir>"); a rack is placed by the join token it joined
// with. What dev minted before it recorded directories ("rackplane-dev")
// is placed nowhere: such tokens are revoked (a dev whose token stops
// working makes another), such racks only pointed at in the log.

// devActor is who rackplane dev acts as, in the log and the audit log.
const devActor = "rackplane-dev"

// devCreatedBy is the maker dev records for tokens minted for dataDir;
// plain devActor when the path does not fit the field (128 bytes).
func devCreatedBy(dataDir string) string {
	if s := devActor + " " + dataDir; len(s) <= 128 {
		return s
	}
	return devActor
}

// devDataDirOf returns the data directory a token's maker names: dev is
// false for a token dev did not make, and dir "" for one whose directory
// dev did not record.
func devDataDirOf(createdBy string) (dir string, dev bool) {
	if createdBy == devActor {
		return "", true
	}
	dir, ok := strings.CutPrefix(createdBy, devActor+" ")
	return dir, ok && dir != ""
}

// staleDevSecret says whether a token dev made (created by createdBy), and
// which is not the one dataDir holds now, belongs to no data directory
// any more: dataDir's own earlier one (its file was lost, which is why
// dev made another), one of a directory whose file is gone, or one of a
// directory dev did not record.
func staleDevSecret(createdBy, dataDir, file string) bool {
	dir, dev := devDataDirOf(createdBy)
	if !dev {
		return false
	}
	if dir == "" || dir == dataDir {
		return true
	}
	_, err := os.Stat(filepath.Join(dir, file))
	return errors.Is(err, fs.ErrNotExist)
}

// secretID is the id part of a token "<prefix><32 hex>_<secret>", or "".
func secretID(plain, prefix string) string {
	idHex, _, _ := strings.Cut(strings.TrimPrefix(plain, prefix), "_")
	id, err := uuid.Parse(idHex)
	if err != nil {
		return ""
	}
	return id.String()
}

// revokeStaleDevTokens revokes the API tokens and join tokens dev made for
// data directories that no longer hold them (staleDevSecret), sparing the
// ones dataDir holds now (apiToken, joinToken; joinToken "" leaves join
// tokens alone: dev runs without them with -insecure-nats).
func revokeStaleDevTokens(ctx context.Context, db *postgres.DB, dataDir, apiToken, joinToken string, log *slog.Logger) error {
	now := time.Now()
	tokens, err := db.ListTokens(ctx)
	if err != nil {
		return err
	}
	api := devSecrets{kind: "API token", file: "token", action: "DELETE /api/v1/tokens/{id}", stream: events.TokenStreamName,
		ours: secretID(apiToken, "rp_"), revoke: func(id string) error { _, err := db.RevokeToken(ctx, id, devActor, now); return err }}
	for _, t := range tokens {
		if t.RevokedAt == nil {
			api.live = append(api.live, devSecret{t.ID, t.CreatedBy, t.CreatedAt})
		}
	}
	if err := api.revokeStale(ctx, db, dataDir, log); err != nil || joinToken == "" {
		return err
	}
	joins, err := db.ListJoinTokens(ctx)
	if err != nil {
		return err
	}
	join := devSecrets{kind: "join token", file: "join-token", action: "DELETE /api/v1/join-tokens/{id}", stream: events.JoinTokenStreamName,
		ours: secretID(joinToken, "rpj_"), revoke: func(id string) error { _, err := db.RevokeJoinToken(ctx, id, devActor, now); return err }}
	for _, t := range joins {
		if t.RevokedAt == nil && t.ExpiresAt.After(now) {
			join.live = append(join.live, devSecret{t.ID, t.CreatedBy, t.CreatedAt})
		}
	}
	return join.revokeStale(ctx, db, dataDir, log)
}

// devSecret is a token that still works: its id, maker and age.
type devSecret struct {
	id, createdBy string
	createdAt     time.Time
}

// devSecrets are the working tokens of one kind, with what dev needs to
// revoke the stale ones: the file a data directory keeps them in, the
// audit action and event stream of a revocation, the id of the one dev
// holds now, and how to revoke one.
type devSecrets struct {
	kind, file, action string
	stream             func(id string) string
	ours               string
	revoke             func(id string) error
	live               []devSecret
}

func (ss devSecrets) revokeStale(ctx context.Context, db *postgres.DB, dataDir string, log *slog.Logger) error {
	for _, t := range ss.live {
		if t.id == ss.ours || !staleDevSecret(t.createdBy, dataDir, ss.file) {
			continue
		}
		if err := ss.revoke(t.id); err != nil {
			return err
		}
		what := ss.kind + " of a rackplane dev data directory that no longer holds it"
		devAudit(ctx, db, ss.action, ss.stream(t.id), what, map[string]any{"revoked": true, "created_by": t.createdBy}, log)
		log.Warn("revoked the "+what, "id", t.id, "created_by", t.createdBy, "created_at", t.createdAt)
	}
	return nil
}

// devAudit records in the audit log what dev did on its own, as the API
// records what is asked of it.
func devAudit(ctx context.Context, db *postgres.DB, action, target, detail string, after any, log *slog.Logger) {
	b, _ := json.Marshal(after)
	if err := db.Audit(ctx, postgres.AuditEntry{Actor: devActor, Action: action, Target: target, Outcome: "success",
		Status: 200, After: b, Detail: detail}); err != nil {
		log.Error("audit log write failed", "action", action, "target", target, "err", err)
	}
}

// staleDevRackEvery is how often retireStaleDevRacks looks again while a
// stale rack is still online, and staleDevRackWait how long it keeps at
// it: the region declares a rack nothing hears offline a few heartbeat
// intervals after it starts.
const (
	staleDevRackEvery = 500 * time.Millisecond
	staleDevRackWait  = 2 * time.Minute
)

// retireStaleDevRacks retires the racks named name, other than the
// running one (rackID), that an earlier dev made and whose identity is
// gone with its data directory: racks that joined with a join token dev
// minted for a directory whose rack/rack-id no longer names them (this
// one, its rack now another, or one deleted since). Such a rack can never
// come back: its nkey went with the directory.
//
// Retired rather than taken over: the new rack has none of what the old
// one had (images, caches, DHCP leases, its nkey), so a new id says what
// it is; keeping the old id would mean binding it to another key, which
// the region's callout refuses by design. A rack is retired once the
// region has it offline (it does, a few heartbeat intervals after it
// starts, for a rack nothing hears); one that stays online (another dev on
// this database, with that directory after all) is left, and one that is
// in use is left with the region's reason in the log. Racks of the name
// dev cannot place are pointed at, once.
func retireStaleDevRacks(ctx context.Context, reg *regiond.Region, db *postgres.DB, name, rackID string, log *slog.Logger) {
	deadline := time.Now().Add(staleDevRackWait)
	done := map[string]bool{} // retired, refused, or not dev's to retire
	for {
		waiting, err := retireStaleDevRacksOnce(ctx, reg, db, name, rackID, done, log)
		if err != nil && ctx.Err() == nil {
			log.Warn("looking for racks of earlier rackplane dev runs", "err", err)
		}
		if len(waiting) == 0 || ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			log.Warn("an earlier rackplane dev's rack of this name is still online: is another rackplane dev running on this database? "+
				"Stop it, or retire the rack once it is offline (rackplane racks retire ID)", "name", name, "rack_ids", waiting)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(staleDevRackEvery):
		}
	}
}

// retireStaleDevRacksOnce does one pass of retireStaleDevRacks and returns
// the stale racks still online.
func retireStaleDevRacksOnce(ctx context.Context, reg *regiond.Region, db *postgres.DB, name, rackID string, done map[string]bool, log *slog.Logger) ([]string, error) {
	racks, err := db.ListRacks(ctx)
	if err != nil {
		return nil, err
	}
	var joins map[string]string // join token id → created_by, read when needed
	var waiting []string
	for _, r := range racks {
		if r.Name != name || r.ID == rackID || done[r.ID] {
			continue
		}
		if joins == nil {
			list, err := db.ListJoinTokens(ctx)
			if err != nil {
				return waiting, err
			}
			joins = map[string]string{}
			for _, t := range list {
				joins[t.ID] = t.CreatedBy
			}
		}
		dir, stale, err := staleDevRack(ctx, db, r.ID, joins)
		if err != nil {
			return waiting, err
		}
		if !stale {
			done[r.ID] = true
			if !r.Online {
				log.Info("an offline rack has the built-in rack's name; rackplane dev cannot tell that it is gone for good: if it is, retire it (rackplane racks retire ID)",
					"rack_id", r.ID, "name", name)
			}
			continue
		}
		if r.Online {
			waiting = append(waiting, r.ID)
			continue
		}
		reason := "the rack of an earlier rackplane dev: its data directory " + dir + " no longer holds it"
		rt, err := reg.RetireRack(ctx, r.ID, devActor, reason)
		done[r.ID] = true
		if rackplane.ErrorCode(err) == rackplane.ECONFLICT || rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
			log.Warn("an earlier rackplane dev's rack is not retired", "rack_id", r.ID, "name", name, "err", err)
			continue
		}
		if err != nil {
			delete(done, r.ID) // try again on the next pass
			return waiting, err
		}
		devAudit(ctx, db, "DELETE /api/v1/racks/{id}", events.RackStreamName(r.ID), reason,
			map[string]any{"retired": true, "credential_revoked": rt.Credential != nil, "consumers_deleted": rt.ConsumersDeleted}, log)
		log.Warn("retired the rack of an earlier rackplane dev, whose data directory no longer holds it; its NATS credential is revoked",
			"rack_id", r.ID, "name", name, "data_dir", dir)
	}
	return waiting, nil
}

// staleDevRack says whether rack rackID joined with a join token dev made
// for a data directory (dir) whose rack/rack-id no longer names it.
func staleDevRack(ctx context.Context, db *postgres.DB, rackID string, joins map[string]string) (dir string, stale bool, err error) {
	cred, err := db.GetRackCredential(ctx, rackID)
	if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
		return "", false, nil // it joined an open NATS server
	}
	if err != nil || cred.JoinTokenID == nil {
		return "", false, err
	}
	dir, _ = devDataDirOf(joins[*cred.JoinTokenID])
	if dir == "" {
		return "", false, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "rack", "rack-id"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return dir, false, nil // unreadable: not known to be gone
	}
	return dir, strings.TrimSpace(string(b)) != rackID, nil
}
