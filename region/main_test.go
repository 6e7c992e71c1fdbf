package region_test

import (
	"os"
	"testing"
)

// TestMain runs the tests, or, started by a benchmark, one of its
// processes: BenchmarkAPIVsPgbench's load client (loadEnv set), or
// BenchmarkScale's NATS server or region (RACKPLANE_SCALE_CHILD set), or
// BenchmarkIngestVsCopy's NATS server and racks (ingestRacksEnv set).
func TestMain(m *testing.M) {
	if racks := os.Getenv(ingestRacksEnv); racks != "" {
		os.Exit(ingestRacksChild(racks))
	}
	if env := os.Getenv(loadEnv); env != "" {
		os.Exit(apiLoadClient(env))
	}
	if role := os.Getenv("RACKPLANE_SCALE_CHILD"); role != "" {
		os.Exit(scaleChild(role))
	}
	os.Exit(m.Run())
}
