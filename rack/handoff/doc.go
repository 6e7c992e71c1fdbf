// Package handoff decides what a boot request gets, whichever front-end
// received it (TFTP, HTTP, an offload front-end over a Unix socket or
// NATS): a config rendered for the requesting machine, a file of an
// explicit image or boot loader version, a file of the fallback root, or a
// refusal. Every decision and every transfer outcome is an event.
//
// Names come from the network and are hostile until proven otherwise: the
// resolver normalises them and never opens anything outside its roots (no
// "..", no NUL, no over-long names, and files are opened through os.Root,
// which refuses symlinks that lead out of the root).
package handoff
