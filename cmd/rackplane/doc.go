// Command rackplane is the command line of Rackplane: `rackplane dev` runs
// the whole system in one process, and the other subcommands are a client
// of the region's web API.
package main
