// Package netns runs code inside a Linux network namespace made with
// `ip netns add` (named under /run/netns). The development lab (package
// lab), the network tests' segments (package netnstest) and the router
// advertisements on their bridges (package routeradv) open sockets there,
// and a socket stays in the namespace it was opened in, whichever thread
// uses it later.
package netns
