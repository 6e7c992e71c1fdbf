// Package scriptrun runs a rack's operator scripts (storage providers,
// power drivers) and the tools they stand beside (ipmitool): a clean
// environment the caller gives in full, no stdin, a timeout, and on
// timeout or cancellation the death of everything the script started.
//
// A script runs in a process group of its own and carries a marker
// variable with a value of its own run. On timeout killTree stops and
// kills its group, the processes descended from it by parent link (a
// child that left the group with setsid) and those whose environment
// holds the marker (a child orphaned by a double fork); on Linux a
// script also dies with the process that started it (Pdeathsig), so a
// crash of rackd leaves no script racing the action retried after the
// restart. Without /proc (not Linux) only the group is killed.
//
// Output goes to a log as it comes; the last TailLines lines come back
// in the Result for errors and events, with secrets the caller names
// masked, and the first StdoutLimit bytes of stdout for the caller to
// parse.
package scriptrun
