package rackrpc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

// statusSecretName names the region secret install status tokens derive
// from.
const statusSecretName = "install-status"

// statusToken is the token a deployment's installer must present to report
// its outcome. It is derived, not stored: the region keeps one secret, and
// a token is only good for the deployment it was made for, so a report
// from an earlier deployment of the same machine, or for another machine,
// is refused. Neither secret nor token ever goes into the event log.
func (s *Server) statusToken(ctx context.Context, deploymentID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secret == nil {
		secret, err := s.db.SealedRegionSecret(ctx, s.keys, statusSecretName)
		if err != nil {
			return "", err
		}
		s.secret = secret
	}
	mac := hmac.New(sha256.New, s.secret)
	mac.Write([]byte("install-status\x00" + deploymentID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// installStatus takes an installer's report, authenticated by the token
// of the machine's current deployment; the lifecycle decides what it does.
// Installers retry, so a report that was already taken is answered again,
// not refused.
func (s *Server) installStatus(ctx context.Context, rack string, data []byte) (any, error) {
	var req events.InstallStatusRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "install_status: %v", err)
	}
	m, err := s.machines.Get(ctx, req.MachineID)
	if err != nil {
		return nil, err
	}
	if want := machine.BootRack(m); want != rack {
		return nil, s.refuse(events.MethodInstallStatus, "not_the_machines_rack", rack, m.ID,
			"machine %s deploys from another rack", m.Hostname)
	}
	if m.DeploymentID == nil {
		return nil, rackplane.Errorf(rackplane.ENOTFOUND, "machine %s has no deployment to report on", m.Hostname)
	}
	switch {
	case req.Token == "" && req.DeploymentID != "":
		// An installed system's phone-home, whose credential the rack the
		// machine deploys from checked (as for a preseed): good for the
		// deployment in progress alone.
		if req.DeploymentID != *m.DeploymentID {
			return nil, s.refuse(events.MethodInstallStatus, "not_the_current_deployment", rack, m.ID,
				"the credential is of another deployment than machine %s's current one", m.Hostname)
		}
	default:
		token, err := s.statusToken(ctx, *m.DeploymentID)
		if err != nil {
			return nil, err
		}
		if !hmac.Equal([]byte(token), []byte(req.Token)) {
			return nil, s.refuse(events.MethodInstallStatus, "wrong_token", rack, m.ID,
				"this token is not the one of machine %s's current deployment", m.Hostname)
		}
	}
	res, err := s.machines.InstallReported(ctx, m.ID, *m.DeploymentID, req.Result != "failure", req.Message, machine.Meta{})
	if err != nil {
		return nil, err
	}
	if res.Changed {
		s.log.Info("installer reported", "machine_id", m.ID, "result", req.Result, "rack_id", rack, "message", req.Message)
	}
	return events.InstallStatusReply{MachineID: m.ID, Status: res.After.Status, Changed: res.Changed}, nil
}
