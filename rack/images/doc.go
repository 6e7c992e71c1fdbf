// Package images is a rack's boot image store: the kernels, initrds,
// squashfs images and bootloaders that machines boot from, kept so that a
// machine which started booting one version keeps getting exactly that
// version while a newer one arrives, and so that nothing is deleted from
// under a machine that is booting.
//
// # Layout on disk
//
// Under <DataDir>/images:
//
//	blobs/<aa>/<sha256>   file contents, stored once by sha256 (read-only)
//	versions/<h>.json     one immutable version manifest per version; <h> is
//	                      the sha256 of the version id, so ids need no escaping
//	sources/<h>.json      per source: ETag, Last-Modified and the last manifest,
//	                      for conditional requests
//	references.json       which owner (a machine's boot decision) references
//	                      which versions
//	quarantine/           blobs that failed verification, kept for inspection
//	tmp/                  downloads in progress; emptied at Open
//	lock                  flock held while a Store is open
//
// # Versioned paths
//
// Every file a machine fetches is named by an explicit, versioned path, so
// the choice of version is machine-side state (the path in its boot config):
//
//	<os>/<arch>/<subarch>/<release>/<label>/<version>/<file>
//	    e.g. ubuntu/amd64/ga-24.04/noble/stable/20261101/linux
//	bootloaders/<bootloader>/<arch>/<version>/<file>
//	    e.g. bootloaders/pxelinux/amd64/3_6.04~git20190206.bf6db5b4+dfsg1-3/pxelinux.0
//
// A version id is the path without the file name. Bootloader versions
// from the system's packages carry the Debian package version, its epoch
// colon turned into "_". Every component matches
// [A-Za-z0-9][A-Za-z0-9._+~-]{0,63} (file names up to 128 characters), so a
// path has no "..", no empty component and no character a TFTP client or a
// shell would mangle; "bootloaders" is reserved and is not an os. The
// TFTP/HTTP front-ends mount these paths under a prefix of their choosing
// and strip it before calling OpenFile.
//
// # Imports
//
// A source is an HTTP(S) URL or a local directory publishing a manifest
// (schema/image_manifest.v1.json; manifest.json in a directory), the
// bootloaders of the machine's own Debian packages, Debian 12's netboot
// installer from its debian-installer-12-netboot-<arch> packages
// (debiannetboot.go), or a simplestreams mirror in the layout MAAS
// publishes (simplestreams.go). The last three build their manifest in
// code and name each version by what it is (package version, serial), so
// importing them again finds every version present: the import is
// unchanged. Each file is downloaded
// to tmp/, checked against the manifest's size and sha256, and renamed into
// blobs/; a version's manifest is written last, atomically, so a version is
// visible only once all its files are in. A source's manifest is fetched
// with If-None-Match/If-Modified-Since, and files already stored are never
// fetched again.
//
// # Garbage collection
//
// A version goes only when no owner references it, no file of it was
// handed out within Config.InFlightWindow, and it is not among the newest
// Config.KeepNewest of its os/arch/subarch/release/label (or
// bootloader/arch). A blob goes when no remaining version uses it.
// A restarted store counts every version as just handed out, since it
// cannot know which boots were in flight when it stopped.
//
// # RPC and events
//
// RegisterRPC answers, on events.RackRPCSubject(rackID, method), with JSON
// bodies whose schemas are schema/images_rpc_<method>.request.v1.json and
// .reply.v1.json (a request that breaks its schema is EINVALID):
//
//	images.list     {}                                  -> ListReply
//	images.import   {"url"|"dir"|"system_bootloaders"|"debian_netboot"|"simplestreams"}
//	                                                    -> ImportStatus (at once; runs on)
//	images.imports  {"id"?}                              -> ImportsReply
//	images.delete   {"version_id"}                       -> GCReport (ECONFLICT while in use)
//	images.gc       {"dry_run"}                          -> GCReport
//	images.scrub    {}                                  -> ScrubReport
//
// State changes go out as events with source events.RackSource(rackID):
// image_imported and image_removed on subject image/<rack>/<version id>;
// image_import_failed, image_blob_removed and image_corrupt on
// image/<rack>/store. Config.OnChange fires whenever the usable versions
// change, for the rack to republish Capabilities().
package images
