// Package bootconfig keeps the region's boot decisions on the rack and
// renders boot loader configs (pxelinux, GRUB, iPXE) from them.
//
// The rack must go on booting machines while the region or NATS is away, so
// decisions are cached in memory and in a file under the rack's data
// directory. The cache follows the region's boot_decision events on
// JetStream from the last stream sequence it applied, and asks the region
// over rpc, with a short timeout, for a MAC it has never seen. A machine
// nobody knows gets the enlistment config (or a local boot), never a wait.
package bootconfig
