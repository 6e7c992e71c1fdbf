// Package schema embeds the JSON Schema files that define Rackplane's wire
// contract: one file per event type (named after the type), the envelope
// they all share, and the documents exchanged over rpc and with image
// sources. The files are the contract; Go code only loads them.
//
// A Set compiles each file once, with the jsonschema library, and from
// that a fast form that only answers valid or not (fast.go): what the fast
// form accepts is valid, and whatever it refuses the library validates
// again, so the library stays the authority on every refusal and its
// error. Tests check that the two agree on documents generated from every
// schema.
package schema

import "embed"

// FS holds every *.json schema file of this directory.
//
//go:embed *.json
var FS embed.FS

// BaseURI is the prefix of every schema's $id; files refer to each other
// relative to it.
const BaseURI = "https://rackplane.dev/schema/"
