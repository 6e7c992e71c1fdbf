// Command regiond is Rackplane's region controller: the web API, the event
// store in PostgreSQL, and the consumer of rack events.
//
//	regiond [flags]                 run the region
//	regiond projections rebuild     rebuild projections from the event log
//	regiond token create NAME ACTOR create an API token and print it
package main
