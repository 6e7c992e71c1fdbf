package natsserver

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Test is an embedded server owned by one test, which can stop it and start
// it again on the same port and store.
type Test struct {
	t      testing.TB
	cfg    Config
	Server *server.Server
	URL    string
}

// StartTest starts a server for t on a free port, stopped at cleanup.
func StartTest(t testing.TB) *Test {
	t.Helper()
	return StartTestConfig(t, "")
}

// StartTestConfig is StartTest with a server configuration file, such as
// one with an authorization section.
func StartTestConfig(t testing.TB, configFile string) *Test {
	t.Helper()
	ts := &Test{t: t, cfg: Config{Port: -1, StoreDir: t.TempDir(), ConfigFile: configFile}}
	ts.start()
	// Pin the port so Restart comes back where clients reconnect.
	ts.cfg.Port = ts.Server.Addr().(*net.TCPAddr).Port
	t.Cleanup(ts.Stop)
	return ts
}

func (ts *Test) start() {
	s, err := Start(ts.cfg)
	if err != nil {
		ts.t.Fatalf("start nats: %v", err)
	}
	ts.Server = s
	ts.URL = s.ClientURL()
}

// Stop shuts the server down (idempotent).
func (ts *Test) Stop() {
	if ts.Server != nil {
		ts.Server.Shutdown()
		ts.Server.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port and store.
func (ts *Test) Restart() {
	ts.Stop()
	ts.start()
}

// Connect returns a client connection that retries forever, closed at cleanup.
func (ts *Test) Connect() *nats.Conn {
	ts.t.Helper()
	nc, err := nats.Connect(ts.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		ts.t.Fatalf("connect nats: %v", err)
	}
	ts.t.Cleanup(nc.Close)
	return nc
}

// Reload makes the server take up its configuration file again.
func (ts *Test) Reload() {
	ts.t.Helper()
	if err := Reload(ts.Server, ts.cfg); err != nil {
		ts.t.Fatal(err)
	}
}
