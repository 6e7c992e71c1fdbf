// Command rackd is Rackplane's rack controller: it boots machines near it
// and answers the region over NATS.
package main
