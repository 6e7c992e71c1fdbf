// Package diskimage builds a small bootable disk image from Debian
// packages, the image of the "agent" installer family: an msdos
// partition table, an EFI system partition with GRUB for UEFI and GRUB
// in the MBR gap for BIOS, and an ext4 root file system, the last
// partition so that it can grow, holding Debian's kernel, an initramfs
// and a busybox userland whose /sbin/init is a small stand-in for
// cloud-init's NoCloud data source (it fetches the instance's data from
// the seed the deploying agent writes, runs a user-data script and
// phones home).
//
// Build writes it as an image source: manifest.json, the zstd-compressed
// raw image and a record of the packages it was built from. The build
// is reproducible: the same packages and tools give the same bytes.
package diskimage
