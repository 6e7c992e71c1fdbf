package rackplane

// Version is the release of this build; set with
// -ldflags "-X github.com/rackplane/rackplane.Version=…".
var Version = "0.1.0-dev"
