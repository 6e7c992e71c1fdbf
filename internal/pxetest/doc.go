// Package pxetest gives PXE boot tests what a booting machine needs: a
// real kernel (from Debian's linux-image-amd64, downloaded once, with the
// modules for e1000, virtio disks and NICs) and a tiny initramfs around
// Debian's static busybox with an /init of the test's choosing, and QEMU
// to boot them. For arm64 it has the Debian installer's
// kernel and initramfs (debian-installer-12-netboot-arm64), with an
// overlay archive that replaces the installer's /init, and
// qemu-system-aarch64 with UEFI firmware. Tests that boot a VM are left
// out of the quick set (go test -short); a machine without QEMU fails
// them.
package pxetest
