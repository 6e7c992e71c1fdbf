package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
)

// Commissioning scripts: operators' shell scripts the commissioning agent
// runs, in name order, after it reported the inventory. The region keeps
// them (each change an event on stream commissioning-script/<name>), a
// rack asks for them on behalf of an agent (MethodCommissioningScripts),
// and each script's outcome comes back as TypeAgentScriptReported.
const (
	TypeCommissioningScriptSet     = "rackplane.region.commissioning_script_set.v1"
	TypeCommissioningScriptDeleted = "rackplane.region.commissioning_script_deleted.v1"
	TypeAgentScriptReported        = "rackplane.rack.agent_script_reported.v1"
)

// MethodCommissioningScripts gives a rack the commissioning scripts of a
// machine whose agent reports to it (CommissioningScriptsRequest), under
// RegionRPCSubject.
const MethodCommissioningScripts = "commissioning_scripts"

// Bounds of commissioning scripts and of what is reported of their runs.
const (
	// MaxScriptContent bounds a script's text in bytes.
	MaxScriptContent = 64 << 10
	// MaxScriptOutput bounds the tail of a run's output (stdout and
	// stderr together) that is reported and kept, in bytes.
	MaxScriptOutput = 16 << 10
	// MaxScripts bounds the scripts a machine runs.
	MaxScripts = 100
	// MaxScriptsTotal bounds the content of all scripts together: they
	// travel in one rpc reply, which must fit a NATS message (1 MiB by
	// default).
	MaxScriptsTotal = 768 << 10
	// MaxScriptDescription bounds a script's description in bytes.
	MaxScriptDescription = 1024
	// DefaultScriptTimeout and MaxScriptTimeout are a script's run time
	// when none is given and the longest one may have, in seconds.
	DefaultScriptTimeout = 300
	MaxScriptTimeout     = 3600
)

// CommissioningScriptStreamPrefix names the streams of commissioning
// scripts.
const CommissioningScriptStreamPrefix = "commissioning-script/"

// CommissioningScriptStreamName is the event-store stream of a script.
func CommissioningScriptStreamName(name string) string { return CommissioningScriptStreamPrefix + name }

// scriptNameRE is what a script's name may be: a path segment, a file
// name on the machine, and what sorts the run order.
var scriptNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidScriptName reports whether name may name a commissioning script.
func ValidScriptName(name string) bool { return scriptNameRE.MatchString(name) }

// ScriptSHA256 is the hex SHA-256 of a script's content.
func ScriptSHA256(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// CommissioningScriptSet is the data of TypeCommissioningScriptSet: the
// script Name is now as given (created or replaced whole).
type CommissioningScriptSet struct {
	Name           string `json:"name"`
	Content        string `json:"content"`
	TimeoutSeconds int    `json:"timeout_seconds"`
	Description    string `json:"description,omitempty"`
	SHA256         string `json:"sha256"`
}

// CommissioningScriptDeleted is the data of TypeCommissioningScriptDeleted.
type CommissioningScriptDeleted struct {
	Name string `json:"name"`
}

// CommissioningScriptsRequest asks the region, over
// RegionRPCSubject(MethodCommissioningScripts), for the scripts the agent
// of machine MachineID, booted for commissioning operation OperationID,
// runs. The region answers only the rack that serves the machine's boot
// (any rack while the machine has none), and only for the machine's
// current commissioning.
type CommissioningScriptsRequest struct {
	MachineID   string `json:"machine_id"`
	OperationID string `json:"operation_id"`
}

// CommissioningScriptsReply answers a CommissioningScriptsRequest: every
// script, ordered by name, which is the order the agent runs them in.
type CommissioningScriptsReply struct {
	Scripts []CommissioningScript `json:"scripts"`
}

// CommissioningScript is a script as the agent gets it.
type CommissioningScript struct {
	Name           string `json:"name"`
	Content        string `json:"content"`
	TimeoutSeconds int    `json:"timeout_seconds"`
	SHA256         string `json:"sha256"`
}

// AgentScriptReported is the data of TypeAgentScriptReported: the agent
// of machine MachineID, commissioning under OperationID, ran script Name.
// ExitCode is its exit status, -1 when it was killed at its timeout (or by
// a signal); Output the tail of its output, Truncated when there was more.
type AgentScriptReported struct {
	MachineID   string `json:"machine_id"`
	OperationID string `json:"operation_id"`
	Name        string `json:"name"`
	ExitCode    int    `json:"exit_code"`
	Output      string `json:"output"`
	Truncated   bool   `json:"truncated"`
	DurationMS  int64  `json:"duration_ms"`
}

// checkAgentScriptReported is what the schema cannot say of a script
// report: its output's bound in bytes (the schema counts characters), and
// that it is on the stream of the machine it names.
func checkAgentScriptReported(e Event) error {
	if err := checkAgentEvent(e); err != nil {
		return err
	}
	var d AgentScriptReported
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	if len(d.Output) > MaxScriptOutput {
		return fmt.Errorf("output: %d bytes, at most %d", len(d.Output), MaxScriptOutput)
	}
	if !ValidScriptName(d.Name) {
		return fmt.Errorf("name %.70q: not a script's name", d.Name)
	}
	return nil
}

// checkCommissioningScriptSet: the content's bound in bytes, its digest,
// and the stream of the script it names.
func checkCommissioningScriptSet(e Event) error {
	var d CommissioningScriptSet
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	if want := CommissioningScriptStreamName(d.Name); e.Subject != want {
		return fmt.Errorf("subject %s: script %s belongs on %s", e.Subject, d.Name, want)
	}
	if len(d.Content) > MaxScriptContent {
		return fmt.Errorf("content: %d bytes, at most %d", len(d.Content), MaxScriptContent)
	}
	if d.SHA256 != ScriptSHA256(d.Content) {
		return fmt.Errorf("sha256 %s is not the content's", d.SHA256)
	}
	return nil
}

func checkCommissioningScriptDeleted(e Event) error {
	var d CommissioningScriptDeleted
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	if want := CommissioningScriptStreamName(d.Name); e.Subject != want {
		return fmt.Errorf("subject %s: script %s belongs on %s", e.Subject, d.Name, want)
	}
	return nil
}
