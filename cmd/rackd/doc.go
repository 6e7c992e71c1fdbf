// Command rackd is Rackplane's rack controller: it boots machines near it
// and answers the region over NATS.
//
// Its flags are listed by rackd -h and in the README's configuration
// section. -pprof-addr (off by default) serves the process's Go profiles
// at /debug/pprof/ on an admin listener of its own, on a loopback address
// unless -pprof-allow-remote:
//
//	rackd -pprof-addr 127.0.0.1:6061 ...
//	go tool pprof http://127.0.0.1:6061/debug/pprof/profile?seconds=30
package main
