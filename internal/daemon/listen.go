package daemon

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
)

// Listener is an address a binary listens on, and the flag that sets it.
type Listener struct {
	Flag string // without its dash: "http-addr"
	Addr string
}

// ExplainListen says, of err from starting a component that listens on
// addrs, which address could not be taken and what to do: another process
// has it (stop that one, or give the flag another address), or a port
// below 1024 needs privileges. Other errors come back as they are.
func ExplainListen(err error, addrs ...Listener) error {
	inUse := errors.Is(err, syscall.EADDRINUSE)
	denied := errors.Is(err, syscall.EACCES)
	if err == nil || !inUse && !denied {
		return err
	}
	msg := err.Error()
	// The longest address first: ":69" is also the start of ":6969".
	slices.SortFunc(addrs, func(a, b Listener) int { return len(b.Addr) - len(a.Addr) })
	for _, l := range addrs {
		if l.Addr == "" || !mentions(msg, l.Addr) {
			continue
		}
		_, port, _ := net.SplitHostPort(l.Addr)
		if denied {
			return fmt.Errorf("%s (-%s): a port below 1024 needs root or CAP_NET_BIND_SERVICE: run with them, or give -%s a port above 1023\n(%w)",
				l.Addr, l.Flag, l.Flag, err)
		}
		return fmt.Errorf("%s (-%s) is in use by another process, perhaps another copy of this one: stop it, or give -%s another address "+
			"(ss -ltnup 'sport = :%s' shows which process has it)\n(%w)", l.Addr, l.Flag, l.Flag, port, err)
	}
	if denied {
		return err
	}
	var flags []string
	for _, l := range addrs {
		flags = append(flags, "-"+l.Flag)
	}
	return fmt.Errorf("an address to listen on is in use by another process: stop it, or change %s\n(%w)", strings.Join(flags, ", "), err)
}

// mentions reports whether msg names addr, not merely a longer port
// that starts with its port.
func mentions(msg, addr string) bool {
	for i := 0; ; {
		j := strings.Index(msg[i:], addr)
		if j < 0 {
			return false
		}
		end := i + j + len(addr)
		if end == len(msg) || msg[end] < '0' || msg[end] > '9' {
			return true
		}
		i = end
	}
}
