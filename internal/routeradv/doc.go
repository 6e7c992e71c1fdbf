// Package routeradv answers IPv6 router solicitations on a boot segment
// that has no IPv6 router, with a router advertisement that announces no
// router, no prefix and no DHCPv6.
//
// iPXE configures IPv6 beside DHCPv4 and boots only when both are done:
// on a segment where no router answers its solicitations it waits them
// out, about 16 seconds under QEMU, before every boot. A site network
// with an IPv6 router answers at once. The development lab (package lab)
// and the network tests' segments (package netnstest) have no router, so
// they run this in its place: the advertisement ends iPXE's wait and
// configures nothing (router lifetime 0: not a default router; neither
// the managed nor the other-configuration flag: no DHCPv6).
//
// Listen and Run must both run on a thread in the interface's network
// namespace: the socket is opened there, and each send names the
// interface, which the kernel looks up in the namespace of the thread
// that sends. Start does both on such a thread, for a namespace made with
// `ip netns add` (package netns).
package routeradv
