package events

import "strings"

// Methods a rack answers under RackRPCSubject(rackID, method): only rack
// rackID may subscribe there, so the answer is that rack's. docs/wire.md
// gives their bodies. validate_licence_key carries a secret: it is asked
// only of a rack that provides the release.
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

// Methods the region answers under RegionRPCSubject(rackID, method), in
// queue group RegionQueue. The region answers each about the asking
// rack's business only: the rack id of the subject, never of the body.
const (
	MethodBootDecision  = "boot_decision"
	MethodPreseed       = "preseed"
	MethodInstallStatus = "install_status"
	// MethodSubnets gives a rack the managed DHCP subnets it serves, as
	// they are now (see SubnetsRequest).
	MethodSubnets = "subnets"
	// MethodFollow has the region (re)create the consumer through which
	// the rack reads the region events of one purpose, starting after a
	// stream sequence (FollowRequest).
	MethodFollow = "follow"
)

// What a rack follows of the region stream, each through a consumer of its
// own (RackConsumerName) that the region positions (MethodFollow).
const (
	FollowBoot    = "boot"    // boot_decision_set and boot_decision_cleared
	FollowSubnets = "subnets" // subnet_set and subnet_deleted
)

// FollowPurposes is every purpose a rack follows: one consumer each.
var FollowPurposes = []string{FollowBoot, FollowSubnets}

// FollowTypes returns the event types a rack follows for purpose, or nil
// for an unknown purpose.
func FollowTypes(purpose string) []string {
	switch purpose {
	case FollowBoot:
		return []string{TypeBootDecisionSet, TypeBootDecisionCleared}
	case FollowSubnets:
		return []string{TypeSubnetSet, TypeSubnetDeleted}
	}
	return nil
}

// FollowRequest asks the region, over RegionRPCSubject(rackID,
// MethodFollow), to start the asking rack's consumer for Purpose after
// stream sequence After (0: from the start of the stream). The region
// deletes and creates it, so it delivers from there whatever it delivered
// before: the rack asks whenever it starts following, with the sequence
// it has applied.
type FollowRequest struct {
	Purpose string `json:"purpose"`
	After   uint64 `json:"after"`
}

// FollowReply answers a FollowRequest with the consumer's name.
type FollowReply struct {
	Consumer string `json:"consumer"`
}

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
