// Package pxetest gives PXE boot tests what a booting machine needs: a
// real kernel (from Debian's linux-image-amd64, downloaded once) and a tiny
// initramfs around Debian's static busybox with an /init of the test's
// choosing, and QEMU to boot them. Tests that boot a VM are left out of
// the quick set (go test -short); a machine without QEMU fails them.
package pxetest
