package events

import (
	"fmt"
)

// Event types of the ephemeral agent. The agent talks HTTP to its rack
// alone (rack/agentapi); the rack checks its credential and passes what it
// says on, on the machine's stream, as its own events.
const (
	TypeAgentStepReported = "rackplane.rack.agent_step_reported.v1"
	TypeAgentFinished     = "rackplane.rack.agent_finished.v1"
)

// States of an agent's step.
const (
	AgentStepStarted = "started"
	AgentStepDone    = "done"
	AgentStepFailed  = "failed"
)

// Bounds of what an agent says: a step's name and a message are cut to
// them by the rack, never refused for their length.
const (
	MaxAgentStepName = 64
	MaxAgentMessage  = 1024
)

// AgentStepReported is the data of TypeAgentStepReported: the agent of
// machine MachineID, booted for OperationID with Purpose, started,
// finished or failed step Name. Progress is the step's own, 0 to 100.
type AgentStepReported struct {
	MachineID   string `json:"machine_id"`
	OperationID string `json:"operation_id"`
	Purpose     string `json:"purpose"`
	Name        string `json:"name"`
	State       string `json:"state"`
	Message     string `json:"message,omitempty"`
	Progress    int    `json:"progress"`
}

// AgentFinished is the data of TypeAgentFinished: the agent's last word
// on its operation, after which it powers the machine off.
type AgentFinished struct {
	MachineID   string `json:"machine_id"`
	OperationID string `json:"operation_id"`
	Purpose     string `json:"purpose"`
	Success     bool   `json:"success"`
	Message     string `json:"message,omitempty"`
}

// checkAgentEvent is what the schema cannot say of the agent's events:
// they are on the stream of the machine they name.
func checkAgentEvent(e Event) error {
	var d struct {
		MachineID string `json:"machine_id"`
	}
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	if want := MachineStreamName(d.MachineID); e.Subject != want {
		return fmt.Errorf("subject %s: an event of machine %s's agent belongs on %s", e.Subject, d.MachineID, want)
	}
	return nil
}

// DeployTask is what the agent of a deploy boot GETs from its rack under
// its agent URL (deploy): the disk image it writes, where to fetch it,
// the disk it writes it to, and what the installed system is told (the
// NoCloud seed the agent leaves on its root filesystem).
type DeployTask struct {
	// ImageURL is the disk image file on the rack's HTTP server, by its
	// versioned path (Range requests are served); File is that file as
	// the rack's image store has it (name, sha256 and size of the bytes
	// fetched), Disk the version's disk image description.
	ImageURL string    `json:"image_url"`
	File     ImageFile `json:"file"`
	Disk     DiskImage `json:"disk"`
	// TargetDisk is the disk to write: a kernel name (vda), a serial, or
	// a /dev/disk/by-id path.
	TargetDisk string `json:"target_disk"`
	// MetadataURL is the rack's metadata service for this deployment
	// (NoCloud seedfrom, ending in /); InstanceID the deployment's id;
	// Hostname the machine's.
	MetadataURL string `json:"metadata_url"`
	InstanceID  string `json:"instance_id"`
	Hostname    string `json:"hostname"`
}
