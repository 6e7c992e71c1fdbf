package rack

import (
	"context"
	"slices"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/reportqueue"
)

// deployTask is the task of a deploy boot's agent (agentapi.Config.Task):
// the disk image its decision names, as this rack's image store has it,
// at its versioned path on the rack's HTTP server.
func (r *Rack) deployTask(b events.BootDecision) (events.DeployTask, error) {
	v, err := r.images.Version(b.DiskImage)
	if err != nil {
		return events.DeployTask{}, err
	}
	if !v.Usable {
		return events.DeployTask{}, rackplane.Errorf(rackplane.EUNAVAILABLE, "image version %s is unusable: %s", v.ID, v.Problem)
	}
	if v.Disk == nil {
		return events.DeployTask{}, rackplane.Errorf(rackplane.ECONFLICT, "image version %s is no disk image", v.ID)
	}
	i := slices.IndexFunc(v.Files, func(f events.ImageFile) bool { return f.Name == v.Disk.File })
	if i < 0 {
		return events.DeployTask{}, rackplane.Errorf(rackplane.ECONFLICT, "image version %s has no file %s", v.ID, v.Disk.File)
	}
	base := strings.TrimRight(r.cfg.BootURL, "/")
	return events.DeployTask{ImageURL: base + "/" + v.ID + "/" + v.Files[i].Name, File: v.Files[i], Disk: *v.Disk,
		TargetDisk: b.TargetDisk, MetadataURL: bootconfig.MetadataURL(b, base, r.creds.For), InstanceID: b.DeploymentID,
		Hostname: b.Hostname}, nil
}

// diskWritten makes the machine boot its disk at once: its agent wrote
// the image and reboots it within seconds.
func (r *Rack) diskWritten(machineID, deploymentID string) {
	macs := r.decisions.Written(machineID, deploymentID)
	r.log.Info("machine boots its disk from now on", "machine_id", machineID, "deployment_id", deploymentID, "macs", macs)
}

// machineMACs are the MACs this rack has decisions of for machineID.
func (r *Rack) machineMACs(machineID string) []string {
	var out []string
	for mac, d := range r.decisions.Decisions() {
		if d.MachineID == machineID {
			out = append(out, mac)
		}
	}
	slices.Sort(out)
	return out
}

// userData asks the region for the deployment's rendered preseed, as an
// installer's preseed fetch does.
func (r *Rack) userData(ctx context.Context, machineID, deploymentID, url, remote string) (string, error) {
	out, err := r.askPreseed(ctx, events.PreseedRequest{RackID: r.id, MachineID: machineID, DeploymentID: deploymentID,
		URL: url, Remote: remote})
	return out.Content, err
}

// phoneHome reports an installed system's success to the region as the
// installer's status endpoint does, for the deployment whose credential
// the metadata service checked; while the region is away the report is
// queued, and delivered in order when it is back.
func (r *Rack) phoneHome(ctx context.Context, machineID, deploymentID, remote string) (string, bool, error) {
	call := events.InstallStatusRequest{RackID: r.id, MachineID: machineID, DeploymentID: deploymentID,
		Result: "success", Message: "the installed system phoned home", Remote: remote}
	if r.reports.Pending() == 0 {
		var out events.InstallStatusReply
		err := r.callRegion(ctx, events.MethodInstallStatus, call, &out)
		if err == nil {
			r.log.Info("phone-home taken", "machine_id", machineID, "status", out.Status, "changed", out.Changed)
			return out.Status, false, nil
		}
		if reportqueue.Permanent(err) {
			return "", false, err
		}
	}
	if err := r.reports.Append(events.MethodInstallStatus, machineID, call); err != nil {
		return "", false, err
	}
	r.log.Info("phone-home queued: region away", "machine_id", machineID, "pending", r.reports.Pending())
	return "", true, nil
}
