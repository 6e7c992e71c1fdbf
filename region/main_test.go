package region_test

import (
	"os"
	"testing"
)

// TestMain runs the tests, or, started by BenchmarkAPIVsPgbench with
// loadEnv set, that benchmark's load client in a process of its own.
func TestMain(m *testing.M) {
	if env := os.Getenv(loadEnv); env != "" {
		os.Exit(apiLoadClient(env))
	}
	os.Exit(m.Run())
}
