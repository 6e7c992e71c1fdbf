// Package pxetest gives PXE boot tests what a booting machine needs: a
// real kernel (from Debian's linux-image-amd64, downloaded once) and a tiny
// initramfs around Debian's static busybox with an /init of the test's
// choosing, and QEMU to boot them.
package pxetest
