// Package agentapi is the rack's HTTP endpoint for the ephemeral agent
// (cmd/rackplane-agent run) a machine boots into to be commissioned or to
// have its disks erased; the boot decision's purpose goes on every event.
// The agent talks to its rack alone, never to NATS or the region; the
// rack passes what it says on as its own events, on the machine's stream.
//
// The rack puts rackplane.agent=<boot url>/agent/<machine>/<credential>
// on the kernel command line of a boot whose purpose runs the agent
// (bootconfig.RunsAgent). The credential is package machinecred's, made
// from the machine and the operation the boot decision belongs to (its
// deployment_id): only that boot's agent has it, and it opens nothing
// once the region has decided another boot. Under that URL:
//
//	POST step       {name, state: started|done|failed, message, progress 0..100}
//	                → rackplane.rack.agent_step_reported.v1
//	POST inventory  an inventory.v1 document (events.DecodeInventory)
//	                → rackplane.rack.inventory_reported.v1
//	POST done       {success, message}
//	                → rackplane.rack.agent_finished.v1
//	GET scripts     → {scripts: [{name, content, timeout_seconds, sha256}]},
//	                the commissioning scripts, asked of the region
//	                (rpc commissioning_scripts) each time; 503 while
//	                the region cannot be reached
//	POST script     {name, exit_code, output, truncated, duration_ms}
//	                → rackplane.rack.agent_script_reported.v1 (output
//	                cut to its last 16 KiB)
//
// Every refusal of the credential is the same 403, whatever it was (no
// agent boot of the machine here, a wrong credential), so nobody on the
// boot network learns which machines commission; the metric
// rackplane_machine_requests_refused_total{endpoint="agent",reason} and
// the log say which. Bodies are bounded (an inventory to
// events.MaxInventorySize, a script's result to 128 KiB, the rest to
// 16 KiB) and read only after the
// credential passed, and each machine's agent is held to a rate: junk
// grows neither the rack's memory nor the event log.
package agentapi
