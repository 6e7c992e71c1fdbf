// Package netnstest gives network tests a segment of their own: a bridge
// in a network namespace created for the test, hosts (namespaces with an
// eth0 on that bridge), a way to open sockets or run programs in a host,
// and the clean-up of all of it when the test ends, even when it fails.
// Nothing touches the machine's own interfaces; the tests need root.
package netnstest
