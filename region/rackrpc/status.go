package rackrpc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
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
		secret, err := s.db.RegionSecret(ctx, statusSecretName)
		if err != nil {
			return "", err
		}
		s.secret = secret
	}
	mac := hmac.New(sha256.New, s.secret)
	mac.Write([]byte("install-status\x00" + deploymentID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

type installStatusRequest struct {
	RackID    string `json:"rack_id"`
	MachineID string `json:"machine_id"`
	Token     string `json:"token"`
	Result    string `json:"result"`
	Message   string `json:"message"`
	Remote    string `json:"remote"`
}

// InstallStatusReply is the answer to the install_status rpc.
type InstallStatusReply struct {
	MachineID string `json:"machine_id"`
	Status    string `json:"status"`
	Changed   bool   `json:"changed"`
}

// installStatus takes an installer's report. Success ends the deployment:
// the machine is deployed and boots from its disk from now on, so a reboot
// into the installed system does not PXE-boot the installer again.
// Failure marks it failed with the installer's message. Installers retry,
// so a report that was already taken is answered again, not refused.
func (s *Server) installStatus(ctx context.Context, data []byte) (any, error) {
	var req installStatusRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "install_status: %v", err)
	}
	want := events.MachineDeployed
	if req.Result == "failure" {
		want = events.MachineFailed
	}
	// A change of the machine meanwhile (a release, another region's
	// timeout check) makes the emit conflict; it is retried on a fresh read.
	for attempt := 0; ; attempt++ {
		m, err := s.db.GetMachine(ctx, req.MachineID)
		if err != nil {
			return nil, err
		}
		if m.DeploymentID == nil {
			return nil, rackplane.Errorf(rackplane.ENOTFOUND, "machine %s has no deployment to report on", m.Hostname)
		}
		token, err := s.statusToken(ctx, *m.DeploymentID)
		if err != nil {
			return nil, err
		}
		if !hmac.Equal([]byte(token), []byte(req.Token)) {
			s.log.Warn("install report refused: wrong token", "machine_id", m.ID, "rack_id", req.RackID, "remote", req.Remote)
			return nil, rackplane.Errorf(rackplane.EFORBIDDEN, "this token is not the one of machine %s's current deployment", m.Hostname)
		}
		switch m.Status {
		case want:
			return InstallStatusReply{MachineID: m.ID, Status: m.Status}, nil
		case events.MachineDeploying:
		default:
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s is %s; a %s report is too late", m.Hostname, m.Status, req.Result)
		}
		evs, err := s.reportEvents(m, req)
		if err != nil {
			return nil, err
		}
		err = s.db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := s.db.EmitMachine(ctx, tx, m.ID, m.Version, evs...)
			return err
		})
		var conflict *postgres.ConflictError
		if errors.As(err, &conflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("installer reported", "machine_id", m.ID, "result", req.Result, "rack_id", req.RackID, "message", req.Message)
		return InstallStatusReply{MachineID: m.ID, Status: want, Changed: true}, nil
	}
}

func (s *Server) reportEvents(m postgres.Machine, req installStatusRequest) ([]events.Event, error) {
	stream := events.MachineStreamName(m.ID)
	if req.Result == "failure" {
		reason := "the installer reported failure"
		if req.Message != "" {
			reason += ": " + req.Message
		}
		ev, err := events.New(events.RegionSource, events.TypeMachineFailed, stream, s.now(), events.MachineRef{MachineID: m.ID, Reason: reason})
		return []events.Event{ev}, err
	}
	reason := "the installer reported success"
	if req.Message != "" {
		reason += ": " + req.Message
	}
	done, err := events.New(events.RegionSource, events.TypeMachineDeployed, stream, s.now(), events.MachineRef{MachineID: m.ID, Reason: reason})
	if err != nil {
		return nil, err
	}
	evs := []events.Event{done}
	for _, d := range events.LocalBoot(m.ID, m.Hostname, m.Arch, m.MACs) {
		ev, err := events.New(events.RegionSource, events.TypeBootDecisionSet, stream, s.now(), d)
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev.CausedBy(done))
	}
	return evs, nil
}
