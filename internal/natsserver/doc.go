// Package natsserver runs an embedded NATS server with JetStream, for
// `rackplane dev` and for tests, which need a real server they can stop and
// start again.
package natsserver
