package ingest

// LaneOf is laneOf, for tests to pick racks whose events are in
// different lanes.
var LaneOf = laneOf
