package daemon_test

import (
	"net"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/daemon"
)

// TestExplainListen: an address in use is named with the flag that moves
// it, from the error of a real listen.
func TestExplainListen(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	_, listenErr := net.Listen("tcp", addr)
	if listenErr == nil {
		t.Fatal("the address was taken twice")
	}
	tests := []struct {
		name  string
		addrs []daemon.Listener
		want  []string
	}{
		{"the flag that has it", []daemon.Listener{{Flag: "nats-addr", Addr: addr}, {Flag: "http-addr", Addr: "127.0.0.1:5240"}},
			[]string{addr + " (-nats-addr) is in use by another process", "give -nats-addr another address", "ss -ltnup 'sport = :" + port + "'"}},
		{"a shorter port is not it", []daemon.Listener{{Flag: "tftp-addr", Addr: addr[:len(addr)-1]}, {Flag: "http-addr", Addr: addr}},
			[]string{addr + " (-http-addr) is in use"}},
		{"no address matches", []daemon.Listener{{Flag: "http-addr", Addr: "127.0.0.1:1"}},
			[]string{"an address to listen on is in use by another process: stop it, or change -http-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := daemon.ExplainListen(listenErr, tt.addrs...)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q missing from %q", w, err)
				}
			}
		})
	}
	if err := daemon.ExplainListen(net.ErrClosed, daemon.Listener{Flag: "http-addr", Addr: addr}); err != net.ErrClosed {
		t.Errorf("another error was changed: %v", err)
	}
}
