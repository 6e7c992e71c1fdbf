// Command rackplane-agent is the ephemeral agent a machine boots into
// from its rack: a static binary (built with CGO_ENABLED=0) in an
// initramfs, with nothing else to rely on than the kernel and busybox.
//
//	rackplane-agent inventory [-root /] [-boot-mac MAC]
//
// prints the machine's hardware inventory as JSON (schema
// inventory.v1.json, checked before it is printed), read from /proc and
// /sys under -root. -boot-mac names the NIC the machine booted from;
// without it the agent takes rackplane.mac= or BOOTIF= from the kernel
// command line (-root's /proc/cmdline). Run it as root: DMI serials and
// UUIDs, SMBIOS entries and EFI variables are readable by root only. For
// Secure Boot's state, efivarfs must be mounted on
// /sys/firmware/efi/efivars.
//
//	rackplane-agent run [-url URL] [-root /] [-boot-mac MAC] [-attempts 8] [-timeout 30s] [-backoff 1s]
//
// commissions the machine: it reports to its rack, at the URL of
// rackplane.agent= on the kernel command line (the rack put it there, with
// the boot's credential), the step inventory started, the inventory, the
// step done (or failed) and the outcome, then exits; the initramfs powers
// the machine off. Every request has a timeout and is tried again, a
// bounded number of times, when no answer came or the rack was busy. The
// URL's credential is never logged. With rackplane.purpose=deploy it
// fetches its task from the rack (GET deploy), streams the disk image
// from the rack's HTTP server (resuming with Range requests), checks the
// file's and the image's sha256 as it writes the image to the target
// disk, grows the root partition, leaves the NoCloud seed of the rack's
// metadata service on the root filesystem, reports the image written and
// reboots the machine into it; a failure (a checksum that does not hold)
// zeroes the first and last MiB of the disk and is reported.
package main
