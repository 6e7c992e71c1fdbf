// Command rackplane is the command line of Rackplane: `rackplane dev` runs
// the whole system in one process, and the other subcommands are a client
// of the region's web API.
//
// rackplane dev -pprof-addr 127.0.0.1:6060 serves the Go profiles of that
// one process (region and rack together) at /debug/pprof/, as regiond and
// rackd do with the same flag.
package main
