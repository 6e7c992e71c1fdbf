// Package scripts keeps operators' commissioning scripts: shell scripts
// the commissioning agent runs on a machine, in name order, after it
// reported the inventory (internal/agent). Each change of a script is an
// event on stream commissioning-script/<name>, projected into
// commissioning_scripts (region/postgres); a rack asks for the scripts on
// behalf of an agent over rpc (region/rackrpc), and what each script did
// comes back as agent_script_reported, projected into
// commissioning_script_results.
//
// A script's first non-zero exit (or its timeout) fails the machine's
// commissioning, with the script's name and the end of its output in the
// machine's failure reason.
package scripts
