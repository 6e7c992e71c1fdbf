// Command regiond is Rackplane's region controller: the web API, the event
// store in PostgreSQL, and the consumer of rack events.
//
//	regiond [flags]                 run the region
//	regiond projections rebuild     rebuild projections from the event log
//	regiond token create NAME ACTOR create an API token and print it
//
// Its flags are listed by regiond -h and in the README's configuration
// section. -pprof-addr (off by default) serves the process's Go profiles
// at /debug/pprof/ on an admin listener of its own, on a loopback address
// unless -pprof-allow-remote:
//
//	regiond -pprof-addr 127.0.0.1:6060 ...
//	go tool pprof http://127.0.0.1:6060/debug/pprof/heap
package main
