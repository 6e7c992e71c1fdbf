// Package osregistry is the region's OS registry: what the installation can
// boot (the union over racks of what each reported), what a rack offers,
// and the licence keys some releases need.
//
// The registry answers from the racks' last capability snapshots, or live:
// it asks every online rack at once over NATS and merges what answers in
// time, naming the racks that did not. A live answer that differs from the
// rack's last snapshot is recorded as a capabilities_diverged event.
//
// group, filter, imagesOf, diverged and Mask are pure, so they are table
// tests; Service puts them together with the Store and the racks' rpc.
package osregistry
