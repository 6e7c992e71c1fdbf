// Package rpc is request/reply over NATS in Rackplane's wire format: a JSON
// request body, and a reply envelope {"from":…, "result":…} or
// {"from":…, "error":{"code":…, "message":…}} whose codes are those of
// rackplane.Error. It serves handlers (one rack, every rack, or the region
// in a queue group) and makes calls: to one responder, or scatter-gather to
// all with a deadline and partial results.
package rpc
