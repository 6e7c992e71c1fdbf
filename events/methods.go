package events

import "strings"

// Methods a rack answers under RackRPCSubject(rackID, method). Info and
// capabilities are also asked of every rack at once, under
// RacksRPCSubject(method). docs/wire.md gives their bodies.
// validate_licence_key carries a secret: it is only ever asked on one
// rack's own subject, never on a broadcast one.
const (
	MethodInfo               = "info"
	MethodCapabilities       = "capabilities"
	MethodValidateLicenceKey = "validate_licence_key"
	// MethodHandoff is asked by a TFTP front-end, not by the region.
	MethodHandoff = "handoff"
)

// Methods of a rack's boot image store, under RackRPCSubject. Their
// bodies have schema files named by ImagesRPCSchema.
const (
	MethodImagesList    = "images.list"
	MethodImagesImport  = "images.import"
	MethodImagesImports = "images.imports"
	MethodImagesDelete  = "images.delete"
	MethodImagesGC      = "images.gc"
	MethodImagesScrub   = "images.scrub"
)

// Methods the region answers under RegionRPCSubject(method), in queue
// group RegionQueue.
const (
	MethodBootDecision  = "boot_decision"
	MethodPreseed       = "preseed"
	MethodInstallStatus = "install_status"
	// MethodSubnets gives a rack the managed DHCP subnets it serves, as
	// they are now (see SubnetsRequest).
	MethodSubnets = "subnets"
)

// Parts of an rpc exchange, each with its own schema file.
const (
	PartRequest = "request"
	PartReply   = "reply"
)

// ImagesRPCSchema names the schema (file name under schema/ without .json)
// of an images method's request or reply (part is PartRequest or
// PartReply): images.gc's request is images_rpc_gc.request.v1.
func ImagesRPCSchema(method, part string) string {
	return "images_rpc_" + strings.TrimPrefix(method, "images.") + "." + part + ".v1"
}
