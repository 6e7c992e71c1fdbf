// Package agent is what the ephemeral agent (rackplane-agent run) does on
// a machine booted to be commissioned, or to have its disks erased
// (rackplane.purpose=erase, erase.go): it reports its steps, the
// machine's inventory and its outcome to the rack that booted it, at the
// URL the rack put on the kernel command line (rackplane.agent=), and
// nowhere else. See rack/agentapi for the other end. After the inventory
// it runs the operators' commissioning scripts the rack gives it, in
// order (scripts.go); the first that fails fails the commissioning.
//
// The URL holds the boot's credential: it is never logged nor put in an
// error; a URL in either reads <base>/agent/<machine>/….
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/inventory"
)

// Param is the kernel parameter carrying the agent's URL.
const Param = "rackplane.agent"

// Config configures Run.
type Config struct {
	// URL is where the agent reports (<rack>/agent/<machine>/<credential>);
	// empty: rackplane.agent= of Root's /proc/cmdline.
	URL string
	// Root holds the /proc and /sys to read ("/").
	Root string
	// BootMAC is the NIC the machine booted from; empty: rackplane.mac=
	// or BOOTIF= of the command line.
	BootMAC string
	// Attempts bounds the tries of each request (default 8); Timeout
	// bounds each try (default 30s); Backoff is the wait after the
	// first failed try, doubled after each up to 30s (default 1s).
	Attempts int
	Timeout  time.Duration
	Backoff  time.Duration
	Logger   *slog.Logger
	// ScriptDir is where commissioning scripts are written to be run
	// (os.TempDir() when empty).
	ScriptDir string
	// Reboot reboots the machine once a deploy boot wrote its disk image
	// (the reboot syscall; nil: it does not reboot).
	Reboot func() error
}

// Run commissions: it reports the inventory step started, collects and
// posts the inventory, reports the step done (or failed), and posts the
// outcome. Step reports are best effort; the inventory and the outcome
// are not: Run fails when the rack did not take them.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 8
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cmdline, _ := os.ReadFile(filepath.Join(cfg.Root, "proc/cmdline"))
	if cfg.URL == "" {
		cfg.URL = URLFromCmdline(string(cmdline))
		if cfg.URL == "" {
			return fmt.Errorf("no %s= on the kernel command line, and no -url: nowhere to report", Param)
		}
	}
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("the agent URL is not an http(s) URL") // the URL itself holds the credential
	}
	c := &client{cfg: cfg, base: u.String(), shown: redact(u), http: &http.Client{Timeout: cfg.Timeout}}
	if cfg.BootMAC == "" {
		cfg.BootMAC = inventory.BootMAC(string(cmdline))
	}
	log := cfg.Logger.With("rack", c.shown)
	log.Info("reporting to the rack", "boot_mac", cfg.BootMAC)
	switch cmdlineValue(string(cmdline), PurposeParam) {
	case events.BootPurposeErase:
		return runErase(ctx, c, string(cmdline), log)
	case events.BootPurposeDeploy:
		return runDeploy(ctx, c, log)
	}

	c.step(ctx, "inventory", events.AgentStepStarted, "", 0)
	col, err := inventory.CollectMachine(ctx, cfg.Root, cfg.BootMAC)
	inv := col.Inventory
	if col.BMCErr != nil {
		log.Warn("inventory without the BMC's address", "err", col.BMCErr)
	}
	var body []byte
	if err == nil {
		body, err = events.EncodeInventory(inv)
	}
	if err == nil {
		err = c.post(ctx, "inventory", body)
	}
	if err != nil {
		log.Error("inventory not reported", "err", err)
		c.step(ctx, "inventory", events.AgentStepFailed, err.Error(), 0)
		if derr := c.done(ctx, false, "inventory: "+err.Error()); derr != nil {
			return errors.Join(fmt.Errorf("inventory: %w", err), derr)
		}
		return fmt.Errorf("inventory: %w", err)
	}
	c.step(ctx, "inventory", events.AgentStepDone, fmt.Sprintf("%d disks, %d NICs", len(inv.Disks), len(inv.NICs)), 100)
	ok, msg := c.runScripts(ctx)
	if err := c.done(ctx, ok, msg); err != nil {
		return err
	}
	log.Info("commissioning reported")
	return nil
}

// URLFromCmdline returns the value of the last rackplane.agent= on a
// kernel command line, or "".
func URLFromCmdline(cmdline string) string {
	var out string
	for w := range strings.FieldsSeq(cmdline) {
		if v, ok := strings.CutPrefix(w, Param+"="); ok {
			out = v
		}
	}
	return out
}

// redact is u without its credential: <base>/agent/<machine>/….
func redact(u *url.URL) string {
	p := u.EscapedPath()
	if i := strings.LastIndex(p, "/"); i >= 0 && strings.Contains(p, "/agent/") {
		p = p[:i+1] + "…"
	} else {
		p = "/…"
	}
	return u.Scheme + "://" + u.Host + p
}

type client struct {
	cfg   Config
	base  string
	shown string
	http  *http.Client
}

func (c *client) step(ctx context.Context, name, state, message string, progress int) {
	b, _ := json.Marshal(map[string]any{"name": name, "state": state, "message": message, "progress": progress})
	if err := c.post(ctx, "step", b); err != nil {
		c.cfg.Logger.Warn("step not reported", "step", name, "state", state, "err", err)
	}
}

func (c *client) done(ctx context.Context, success bool, message string) error {
	b, _ := json.Marshal(map[string]any{"success": success, "message": message})
	if err := c.post(ctx, "done", b); err != nil {
		return fmt.Errorf("outcome not reported: %w", err)
	}
	return nil
}

// permanent is an answer no retry changes: the rack refused the request.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// post sends body to endpoint, trying again on what a lossy network or a
// busy rack causes (no answer, 5xx, 429, 408) up to Attempts times.
func (c *client) post(ctx context.Context, endpoint string, body []byte) error {
	wait := c.cfg.Backoff
	var err error
	for try := 1; ; try++ {
		err = c.once(ctx, endpoint, body)
		var p permanent
		if err == nil || errors.As(err, &p) || try >= c.cfg.Attempts {
			return err
		}
		c.cfg.Logger.Warn("request failed, trying again", "endpoint", endpoint, "try", try, "err", err)
		// Jittered, so that the agents of a rack booted at once do not
		// all come back together.
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (c *client) once(ctx context.Context, endpoint string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+endpoint, bytes.NewReader(body))
	if err != nil {
		return permanent{errors.New("cannot make the request")}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error names the URL, credential and all: keep its cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("POST %s/%s: %w", c.shown, endpoint, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("POST %s/%s: %s: %s", c.shown, endpoint, resp.Status, strings.TrimSpace(string(msg)))
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return err
	}
	return permanent{err}
}
