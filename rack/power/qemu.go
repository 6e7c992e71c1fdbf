package power

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rackplane/rackplane/events"
)

// qemuDriver speaks QMP to a VM's unix socket.
type qemuDriver struct{}

// qemuActions are those QMP can do: QEMU has no command that changes the
// next boot device of a running VM.
var qemuActions = []events.PowerAction{events.PowerOn, events.PowerOff, events.PowerCycle, events.PowerSoftOff, events.PowerStatus}

func (qemuDriver) describe() events.PowerDriver {
	return events.PowerDriver{Name: DriverQEMU, Kind: events.PowerDriverBuiltin, Available: true,
		Detail: "QMP over the unix socket given as address", Actions: qemuActions}
}

func (qemuDriver) check(req Request) error {
	p := req.Parameters
	switch {
	case !filepath.IsAbs(p.Address):
		return fail(events.PowerOutcomeInvalid, "qemu needs the absolute path of the VM's QMP socket as address, not %.80q", p.Address)
	case p.Port != 0 || p.Username != "" || p.Password != "":
		return fail(events.PowerOutcomeInvalid, "qemu takes no port, user or password: the QMP socket's file permissions guard it")
	}
	return checkExtras(DriverQEMU, p.Extra, func(string) bool { return false })
}

func (qemuDriver) run(ctx context.Context, req Request) (string, error) {
	c, err := dialQMP(ctx, req.Parameters.Address)
	if err != nil {
		return "", err
	}
	defer c.close()
	switch req.Action {
	case events.PowerStatus:
		st, err := c.status()
		if err != nil {
			return "", err
		}
		return qemuState(st)
	case events.PowerOn:
		st, err := c.status()
		if err != nil {
			return "", err
		}
		switch st {
		case "running":
			return events.PowerStateOn, nil
		case "shutdown", "guest-panicked", "internal-error":
			// cont alone does not revive a guest that powered off or
			// died: it starts from a reset.
			if err := c.execute("system_reset"); err != nil {
				return "", err
			}
		}
		return events.PowerStateOn, c.execute("cont")
	case events.PowerOff:
		if err := c.execute("stop"); err != nil {
			return "", err
		}
		return events.PowerStateOff, c.execute("system_reset")
	case events.PowerCycle:
		if err := c.execute("system_reset"); err != nil {
			return "", err
		}
		return events.PowerStateOn, c.execute("cont")
	case events.PowerSoftOff:
		return events.PowerStateUnknown, c.execute("system_powerdown")
	}
	return "", fail(events.PowerOutcomeUnsupported, "qemu has no action %s", req.Action)
}

// qemuState maps a QMP run state to a power state. Running is on; a VM
// stopped before its start (prelaunch, the -S of whoever runs it), paused,
// shut down or suspended is off; the rest (a guest that panicked, an I/O
// error, a migration) is neither, and says so.
func qemuState(status string) (string, error) {
	switch status {
	case "running":
		return events.PowerStateOn, nil
	case "paused", "prelaunch", "shutdown", "suspended":
		return events.PowerStateOff, nil
	}
	return "", fail(events.PowerOutcomeFailed, "the VM is in QEMU run state %.40q, neither on nor off", status)
}

// maxQMPBytes bounds what is read from one QMP session: replies are small,
// and a socket that streams something else must not fill the rack's
// memory.
const maxQMPBytes = 1 << 20

// qmp is one QMP session.
type qmp struct {
	w    io.Writer
	c    io.Closer
	dec  *json.Decoder
	next int
}

// newQMP starts a session on what r reads and w writes: it reads the
// greeting and leaves capabilities negotiation, so that the session is
// in command mode. At most maxQMPBytes are read.
func newQMP(r io.Reader, w io.Writer, c io.Closer, name string) (*qmp, error) {
	q := &qmp{w: w, c: c, dec: json.NewDecoder(bufio.NewReader(io.LimitReader(r, maxQMPBytes)))}
	var greeting QMPMessage
	if err := q.dec.Decode(&greeting); err != nil {
		return nil, q.readErr("greeting", err)
	}
	if greeting.QMP == nil {
		return nil, fail(events.PowerOutcomeFailed, "%s does not greet as a QMP server", name)
	}
	if err := q.execute("qmp_capabilities"); err != nil {
		return nil, err
	}
	return q, nil
}

// QMPMessage is one message a QMP server sends: the greeting, a command's
// return or error (with the id the command gave), or an event.
type QMPMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	ID    json.RawMessage `json:"id"`
}

// dialQMP connects and starts a session (newQMP).
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fail(events.PowerOutcomeUnreachable, "no QMP socket at %s: the VM is not running", path)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fail(events.PowerOutcomeTimeout, "QMP socket %s: %v", path, err)
		}
		return nil, fail(events.PowerOutcomeUnreachable, "QMP socket %s: %v", path, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	q, err := newQMP(conn, conn, conn, path)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return q, nil
}

func (c *qmp) close() { _ = c.c.Close() }

func (c *qmp) readErr(what string, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fail(events.PowerOutcomeTimeout, "QMP %s: no answer in time", what)
	}
	return fail(events.PowerOutcomeFailed, "QMP %s: %v", what, err)
}

// call sends command and returns its return value, passing over the
// events that come before it.
func (c *qmp) call(command string) (json.RawMessage, error) {
	c.next++
	id := strconv.Itoa(c.next)
	b, err := json.Marshal(map[string]string{"execute": command, "id": id})
	if err != nil {
		return nil, err
	}
	if _, err := c.w.Write(append(b, '\n')); err != nil {
		return nil, c.readErr(command, err)
	}
	for {
		var msg QMPMessage
		if err := c.dec.Decode(&msg); err != nil {
			return nil, c.readErr(command, err)
		}
		if msg.Event != "" || string(msg.ID) != strconv.Quote(id) {
			continue
		}
		if msg.Error != nil {
			return nil, fail(events.PowerOutcomeFailed, "QMP %s: %s: %s", command, msg.Error.Class, msg.Error.Desc)
		}
		if msg.Return == nil {
			return nil, fail(events.PowerOutcomeFailed, "QMP %s: an answer with neither return nor error", command)
		}
		return msg.Return, nil
	}
}

func (c *qmp) execute(command string) error {
	_, err := c.call(command)
	return err
}

// status returns the VM's run state (query-status).
func (c *qmp) status() (string, error) {
	ret, err := c.call("query-status")
	if err != nil {
		return "", err
	}
	st, err := ParseQMPStatus(ret)
	if err != nil {
		return "", fail(events.PowerOutcomeFailed, "QMP query-status: %v", err)
	}
	return st, nil
}

// ParseQMPStatus reads the run state from query-status's return value.
func ParseQMPStatus(ret []byte) (string, error) {
	var st struct {
		Status *string `json:"status"`
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		return "", fmt.Errorf("unreadable return: %w", err)
	}
	if st.Status == nil || *st.Status == "" {
		return "", errors.New("no status in the return")
	}
	return *st.Status, nil
}
