// Package inventory takes a machine's hardware inventory
// (events.Inventory) from what Linux shows in /proc and /sys, for the
// commissioning agent (rackplane-agent inventory), which runs it on the
// machine with root "/". Collect reads files only: no tool, no ioctl,
// nothing written, so a tree of copied files (testdata) is read as the
// machine itself would be. CollectMachine adds the one thing files do not
// hold, the BMC's LAN address, asked over IPMI on the machine itself.
//
// Where each value comes from:
//
//   - CPU: /proc/cpuinfo (model, flags; x86's physical and core ids), and
//     the online CPUs' /sys/devices/system/cpu/cpuN/topology, which also
//     counts arm64's sockets and cores. arm64 has no model name: it is
//     named from the implementer and part codes, as lscpu does.
//   - Memory: MemTotal of /proc/meminfo is what the kernel can use. What is
//     installed is the sum of the SMBIOS memory devices (type 17, in
//     /sys/firmware/dmi/entries), which is what the slots hold; failing
//     that (no SMBIOS table, a size it leaves unknown) the kernel's memory
//     blocks (/sys/devices/system/memory), which count the RAM handed to
//     the kernel in whole blocks of 128 MiB or more, so they can round up
//     by a block per range of RAM. The source is named in the inventory.
//   - Disks: /sys/block, whole devices with a device link (virtual ones
//     have none), optical and floppy drives left out; size is the sectors
//     of 512 bytes the kernel counts; the serial is virtio-blk's or NVMe's
//     attribute or the SCSI serial number page (vpd_pg80); by-id are the
//     /dev/disk/by-id links udev made, when it ran.
//   - NICs: /sys/class/net, interfaces with a device link; a bond's port
//     shows its own MAC (perm_hwaddr). Link is the carrier, unknown while
//     the interface is administratively down.
//   - Firmware: UEFI when /sys/firmware/efi exists; Secure Boot from the
//     SecureBoot variable in efivarfs (mounted at
//     /sys/firmware/efi/efivars), unknown when that is not mounted.
//   - DMI: /sys/class/dmi/id, vendors' placeholders left out.
//   - BMC: its IPv4 LAN address, from the answer to Get LAN
//     Configuration Parameters (parameter 3) sent through the Linux IPMI
//     device interface (/dev/ipmi0, which ipmi_si and ipmi_devintf make)
//     to LAN channels 1 to 8, the first with an address; what ipmitool
//     lan print shows. sysfs and SMBIOS do not have it. Left out where
//     there is no device (no BMC, or a tree of copied files) and where
//     the BMC does not answer or has no address: CollectMachine says why
//     for the log.
package inventory
