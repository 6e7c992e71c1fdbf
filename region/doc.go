// Package region assembles the region controller (regiond): it migrates the
// database, makes sure the JetStream streams exist, and runs the rack event
// ingester, the rack liveness monitor, the outbox relay and the web API
// together, until the context ends or one of them fails.
package region
