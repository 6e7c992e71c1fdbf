// Package power drives machines' BMCs from the rack that reaches them.
// The region asks a rack over rpc (events.MethodPower) with the machine's
// driver, action and parameters, credentials included; the rack runs the
// action, answers with an events.PowerReply and publishes an
// events.PowerActionCompleted on the machine's stream. Credentials live
// only as long as the request: nothing of them is written to disk, to a
// log line, an event or a reply (the password is masked in every error
// text, a script's output included).
//
// # Drivers
//
// ipmi: IPMI 2.0 over LAN (lanplus) through Debian's ipmitool, as MAAS
// does: it is maintained, has years of vendor quirks handled (cipher
// suite selection, sessions of BMCs that bend the specification), and an
// operator can run the very command line by hand to check a BMC. A Go
// IPMI library would be one more implementation of RMCP+ and its crypto
// to trust with every vendor's firmware; ipmitool is the one operators
// already trust. The password goes to ipmitool through its environment
// (-E, IPMI_PASSWORD), never on the command line, so it does not show in
// ps or /proc/<pid>/cmdline. The cipher suite is an extra, cipher_suite
// (3 by default, MAAS's default, which every IPMI 2.0 BMC has; naming it
// also spares the "get cipher suites" exchange that some BMCs never
// answer); privilege is another (user, operator or administrator), and retries
// and retry_interval (seconds) are ipmitool's -R and -N, which bound how
// long an unreachable BMC takes to be declared so (about 20s by
// default). cycle
// of a machine that is off powers it on (many BMCs refuse a cycle then);
// set_boot is "chassis bootdev pxe|disk" for the next boot, with
// options=efiboot when the extra boot_type is efi.
//
// qemu: a VM's QMP unix socket (the address is the socket's path), for
// labs, rackplane dev and tests. QMP is a small documented protocol of
// JSON lines (a greeting, qmp_capabilities, then commands each answered by
// a return or an error, with events in between), so it is spoken with
// encoding/json over net.Dial("unix"): no library. The VM is started with
// -S by whoever runs it, so "off" is a VM paused and reset: on is cont,
// off is stop then system_reset, cycle is system_reset then cont,
// soft_off is system_powerdown (the ACPI button), status is query-status
// (running is on; paused, prelaunch, shutdown and suspended are off).
// There is no set_boot.
//
// webhook: HTTP calls to URLs an operator gives in the extras, per action
// (url_<action>, else url), with method (method_<action>, else method,
// else POST, and GET for status) and body (body_<action>, else body but
// not with a GET)
// rendered with text/template from the action, the machine, the address,
// the port, the user, the boot device and the extras; the password only
// when a template asks for {{.Password}}. A user name makes the call
// carry HTTP basic authentication. A 2xx answer is success; status reads
// on or off from the answer's body (plain, or a JSON object's state,
// power_state, power or status, or the field named by status_field).
// Redirects are not followed and no proxy is used.
//
// Script drivers: a directory named after the driver in the power search
// path, holding power-on, power-off and power-status, and optionally
// power-cycle (else off then on), power-soft-off and set-boot. They run
// through internal/scriptrun, the runner of the storage providers, with
// a clean environment: POWER_ACTION, POWER_MACHINE_ID, POWER_ADDRESS,
// POWER_PORT, POWER_USER, POWER_PASSWORD, POWER_BOOT_DEVICE (set-boot)
// and POWER_EXTRA_<NAME> for each extra. Exit status 0 is success;
// 3 says the BMC refused the credentials (outcome auth_failed, which the
// region does not retry), 4 that the BMC could not be reached
// (unreachable); any other is a failure. power-status prints on or off
// on its first line of output. A script
// past the power timeout is killed with everything it started, and a
// failure carries the last lines of its output, the password masked.
//
// # Bounds
//
// Each action has the power timeout (Config.Timeout); at most
// Config.Concurrency run at once, so one hanging BMC takes one slot and
// holds up nobody else; actions on one machine run one at a time, in
// order; an action that finds no free slot within the timeout is refused
// as busy without running. The rack answers power rpc through an rpc
// server of its own, so a flood of power requests cannot take the slots
// of the rack's other rpc.
package power
