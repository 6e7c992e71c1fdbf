// Package lab is `rackplane dev -vms N`: a lab of QEMU machines that
// PXE-boot from the dev rack, in one command.
//
// Run makes a private network namespace holding a bridge (the rack's
// address on it) and one tap per VM, runs `rackplane dev` inside it with
// the rack's managed DHCP, TFTP and boot HTTP on the bridge, forwards the
// region's API (and NATS) from the host's loopback into it, imports the
// ephemeral environment and a deployable disk image (built once and kept
// in the data directory), starts the VMs (SeaBIOS and OVMF in turn) and
// gives each machine they enlist the qemu power driver with its QMP
// socket. The bridge answers the VMs' IPv6 router solicitations
// (package routeradv): the lab has no IPv6 router, and iPXE would wait
// about 16 seconds for one before each boot. When its context ends it
// stops the VMs and dev and deletes the namespace, with the taps and
// bridge in it; the data directory stays. A namespace a killed lab left
// behind is deleted at the next start with the same data directory
// (CleanStale).
package lab
