// Package metadata is the rack's metadata service for machines deploying
// (an ubuntu-autoinstall installer, a disk image's installed system):
// what cloud-init's NoCloud-net datasource (and a disk image's own init)
// fetches from
// <rack>/metadata/<machine>/<credential>/, the credential being the
// machine's for its deployment (package machinecred, as a preseed's and
// an agent's), and EC2-style paths under latest/ for images that look
// there.
//
//	meta-data            instance-id (the deployment), local-hostname
//	user-data            the deployment's pinned preseed, as the region renders it
//	vendor-data          a cloud-config whose phone_home reports to phone-home
//	network-config       netplan v2: DHCP on each of the machine's NICs, matched by MAC
//	latest/meta-data/{instance-id,hostname,local-hostname}, latest/user-data
//	POST phone-home      the installed system is up: the deployment succeeded
//
// It serves a deployment only while it is in progress on this rack (the
// boot decisions name it: an installer's, ubuntu-autoinstall's whose
// NoCloud seed this is, or a disk image's from its agent's boot until the
// phone-home);
// every other request is refused alike (403, or 404 for a path it does
// not serve), counted by reason, and logged without its credential.
package metadata
