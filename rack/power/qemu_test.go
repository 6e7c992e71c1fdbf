package power

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// startQEMU starts a VM with no machine and no disk, stopped (-S), its
// QMP on a unix socket: enough to be powered on and off.
func startQEMU(t *testing.T) string {
	t.Helper()
	qemu := needTool(t, "qemu-system-x86_64", "qemu-system-x86")
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	exited, out := startProcess(t, "/", "nice", "-n", "19", qemu, "-accel", "tcg", "-machine", "none", "-S", "-nographic", "-nodefaults",
		"-monitor", "none", "-serial", "none", "-qmp", "unix:"+sock+",server=on,wait=off")
	scriptruntest.Eventually(t, "QEMU's QMP socket", func() bool {
		select {
		case <-exited:
			t.Fatalf("QEMU exited: %s", out)
		default:
		}
		_, err := os.Stat(sock)
		return err == nil
	})
	return sock
}

func TestQEMUDriver(t *testing.T) {
	sock := startQEMU(t)
	m := newManager(t, Config{Settings: Settings{Timeout: 5 * time.Second}})
	// A socket that is not QMP: it says something else and hangs up.
	notQMP := filepath.Join(t.TempDir(), "other.sock")
	ln, err := net.Listen("unix", notQMP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(`{"hello": "I am not QEMU"}` + "\n"))
			_ = c.Close()
		}
	}()
	at := func(addr string) events.PowerParameters { return events.PowerParameters{Address: addr} }
	c := func(name string, a events.PowerAction, p events.PowerParameters, state, outcome, errHas string) actionCase {
		tc := actionCase{name: name, action: a, params: p, state: state, outcome: outcome, errHas: errHas}
		if a == events.PowerSetBoot {
			tc.device = events.BootDevicePXE
		}
		return tc
	}
	cases := []actionCase{
		c("started stopped is off", events.PowerStatus, at(sock), "off", "ok", ""),
		c("on", events.PowerOn, at(sock), "on", "ok", ""),
		c("status on", events.PowerStatus, at(sock), "on", "ok", ""),
		c("on when on", events.PowerOn, at(sock), "on", "ok", ""),
		c("off", events.PowerOff, at(sock), "off", "ok", ""),
		c("status off", events.PowerStatus, at(sock), "off", "ok", ""),
		c("cycle", events.PowerCycle, at(sock), "on", "ok", ""),
		c("status after cycle", events.PowerStatus, at(sock), "on", "ok", ""),
		c("soft off is asked", events.PowerSoftOff, at(sock), "unknown", "ok", ""),
		c("no such socket", events.PowerStatus, at(sock+".nope"), "unknown", "unreachable", "the VM is not running"),
		c("not QMP", events.PowerStatus, at(notQMP), "unknown", "failed", "does not greet as a QMP server"),
		c("relative path", events.PowerStatus, at("qmp.sock"), "unknown", "invalid", "absolute path"),
		c("password", events.PowerStatus, events.PowerParameters{Address: sock, Password: "x"}, "unknown", "invalid", "takes no port, user or password"),
		c("set boot", events.PowerSetBoot, at(sock), "unknown", "unsupported", "does not offer set_boot"),
	}
	runCases(t, m, DriverQEMU, cases, nil, nil)
}

func TestQEMUStates(t *testing.T) {
	for status, want := range map[string]string{"running": "on", "paused": "off", "prelaunch": "off", "shutdown": "off",
		"suspended": "off", "guest-panicked": "", "inmigrate": "", "": ""} {
		got, err := qemuState(status)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("qemuState(%q) = %q, %v; want %q", status, got, err, want)
		}
	}
}
