package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestREADMEFirstDeployment runs the README's "A first deployment" block,
// as written, as a newcomer would: in a copy of the source tree with no
// .rackplane, beside `go run ./cmd/rackplane dev` on the README's
// default addresses. It runs in a network namespace of its own, so those
// addresses are free whatever else runs; PostgreSQL is reached through
// its Unix socket, which namespaces do not separate. The block must run
// to its end with every command succeeding (it is run with bash -e and
// its curls fail on HTTP errors), and the machine it deploys must be
// deploying Debian with a boot config that carries the installer's
// parameters.
func TestREADMEFirstDeployment(t *testing.T) {
	endToEnd(t)
	// A namespace of its own: it runs beside the deployment tests,
	// which keeps CI within its time.
	t.Parallel()
	netnstest.Need(t, "jq", "jq")
	netnstest.Need(t, "curl", "curl")
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block, err := readmeBlock(readme, "A first deployment")
	if err != nil {
		t.Fatal(err)
	}
	tree := copyTree(t, root)

	seg := netnstest.New(t)
	ns := seg.Host("readme", "52:54:00:ee:77:01", "10.77.0.2/24")
	db := socketURL(t, pgtest.NewDatabase(t))
	env := append(os.Environ(), "DATABASE_URL="+db, "HOME="+t.TempDir(), "GOFLAGS=-mod=mod")
	// The Go caches of the test's user keep go run from compiling the
	// world again, and the module cache from reaching the network.
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
		if v, err := exec.Command("go", "env", k).Output(); err == nil {
			env = append(env, k+"="+strings.TrimSpace(string(v)))
		}
	}

	devOut := &netnstest.Buffer{}
	dev := exec.Command("ip", "netns", "exec", ns, "go", "run", "./cmd/rackplane", "dev")
	dev.Dir, dev.Env, dev.Stdout, dev.Stderr = tree, env, devOut, devOut
	// go run starts the program as its child: the group is killed.
	dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-dev.Process.Pid, syscall.SIGKILL)
		_ = dev.Wait()
		if t.Failed() {
			t.Logf("rackplane dev:\n%s", tail(devOut.String(), 80))
		}
	})
	if !netnstest.WaitFor(5*time.Minute, func() bool {
		out, err := netnstest.Run(ns, "curl", "-fsS", "-H", "Authorization: Bearer "+readToken(tree), "127.0.0.1:5240/api/v1/racks")
		return err == nil && onlineRack.Match(out)
	}) {
		t.Fatalf("rackplane dev did not list an online rack within 5m")
	}

	// The quick start's client commands, each as written: the followers
	// keep running through the first deployment, which they must show.
	follows := runQuickStart(t, readme, ns, tree, env)

	script := filepath.Join(t.TempDir(), "first-deployment.sh")
	if err := os.WriteFile(script, []byte("set -euo pipefail\nset -x\n"+block), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", script)
	run.Dir, run.Env = tree, env
	out, err := run.CombinedOutput()
	t.Logf("the README's first deployment:\n%s", tail(string(out), 60))
	if err != nil {
		t.Fatalf("the README's first deployment failed: %v", err)
	}

	// What the block did, as the operator would check it.
	api := func(path string) string {
		b, err := netnstest.Run(ns, "curl", "-fsS", "-H", "Authorization: Bearer "+readToken(tree), "127.0.0.1:5240/api/v1"+path)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, b)
		}
		return string(b)
	}
	var list struct {
		Machines []struct {
			Hostname, Status, OS, Release string
			PreseedName                   string `json:"preseed_name"`
		}
	}
	if err := json.Unmarshal([]byte(api("/machines")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Machines) != 1 || list.Machines[0].Hostname != "node1" || list.Machines[0].Status != "deploying" ||
		list.Machines[0].OS != "debian" || list.Machines[0].PreseedName == "" {
		t.Errorf("after the README's block, machines are %+v; want node1 deploying debian with a preseed", list.Machines)
	}
	// events -f and audit -f, started before the block, followed it.
	for _, f := range follows {
		f.showed(t, "machine_deploying", "machines/{id}/deploy")
	}
	cfg, err := netnstest.Run(ns, "curl", "-fsS", "127.0.0.1:5248/ipxe/52-54-00-12-34-56.ipxe")
	if err != nil {
		t.Fatalf("node1's iPXE config: %v\n%s", err, cfg)
	}
	for _, want := range []string{"auto=true", "priority=critical", "url=http://"} {
		if !bytes.Contains(cfg, []byte(want)) {
			t.Errorf("node1's iPXE config lacks %s:\n%s", want, cfg)
		}
	}
}

// logFollower is a README command that follows a log (events -f, audit -f)
// and is still running.
type logFollower struct {
	line string
	proc *readmeProc
}

// readmeProc is a README line running: its output, and done closed once
// it ended, with err.
type readmeProc struct {
	out, errOut *netnstest.Buffer
	done        chan struct{}
	err         error
}

// showed checks that the follower is still following and that its output
// has one of want, within a minute.
func (f logFollower) showed(t *testing.T, want ...string) {
	t.Helper()
	has := func() bool {
		for _, w := range want {
			if strings.Contains(f.proc.out.String(), w) {
				return true
			}
		}
		return false
	}
	if !netnstest.WaitFor(time.Minute, has) {
		t.Errorf("%s showed none of %q:\n%s", f.line, want, tail(f.proc.out.String(), 20))
	}
	select {
	case <-f.proc.done:
		t.Errorf("%s stopped following: %v\n%s", f.line, f.proc.err, tail(f.proc.errOut.String(), 20))
	default:
	}
}

// runQuickStart runs the README's first client block ("names racks and
// machines by name or id") line by line, as a newcomer pastes it, and
// checks what each line is said to show: the online dev-rack (JSON and
// table), the rack's TFTP server answering with iPXE's script, a second
// rack that joins with the join token and is listed online. The log
// followers are left running and returned.
func runQuickStart(t *testing.T, readme []byte, ns, tree string, env []string) []logFollower {
	t.Helper()
	block, err := readmeBlock(readme, "The client names racks and machines by name or id")
	if err != nil {
		t.Fatal(err)
	}
	// What a line prints on standard output is what is checked; its
	// standard error (curl's progress meter off a terminal, go run's
	// downloads) is shown when it fails.
	start := func(line string) *readmeProc {
		p := &readmeProc{out: &netnstest.Buffer{}, errOut: &netnstest.Buffer{}, done: make(chan struct{})}
		cmd := exec.Command("ip", "netns", "exec", ns, "bash", "-c", line)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = tree, env, p.out, p.errOut
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		// A process that leaves the group and keeps the output open
		// must not hold the test: Wait gives up on the output after this.
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait is called once, here; everything else waits on done.
		go func() { p.err = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not end 30s after it was killed", line)
			}
		})
		return p
	}
	finish := func(line string) string {
		p := start(line)
		select {
		case <-p.done:
			if p.err != nil {
				t.Fatalf("the README's %q failed: %v\n%s%s", line, p.err, p.out.String(), p.errOut.String())
			}
		case <-time.After(5 * time.Minute):
			t.Fatalf("the README's %q did not finish in 5m:\n%s%s", line, p.out.String(), p.errOut.String())
		}
		return p.out.String()
	}
	var follows []logFollower
	ran := 0
	for _, line := range strings.Split(block, "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue // a comment that goes on from the line above
		}
		ran++
		switch {
		case strings.Contains(line, "/api/v1/racks"):
			var out struct {
				Racks []struct {
					Name   string
					Online bool
				}
			}
			got := finish(line)
			if err := json.Unmarshal([]byte(got), &out); err != nil || len(out.Racks) != 1 || out.Racks[0].Name != "dev-rack" || !out.Racks[0].Online {
				t.Errorf("%s: want one online rack, dev-rack; got %v\n%s", line, err, got)
			}
		case strings.Contains(line, "rackplane racks"):
			if got := finish(line); !regexp.MustCompile(`(?m)^\S+\s+dev-rack\s+online\s`).MatchString(got) {
				t.Errorf("%s: no online dev-rack in the table:\n%s", line, got)
			}
		case strings.Contains(line, " -f"):
			follows = append(follows, logFollower{line: strings.TrimSpace(strings.SplitN(line, "#", 2)[0]), proc: start(line)})
		case strings.HasPrefix(line, "curl tftp://"):
			if got := finish(line); !strings.HasPrefix(got, "#!ipxe") {
				t.Errorf("%s: want iPXE's script, got:\n%s", line, tail(got, 10))
			}
		case strings.Contains(line, "cmd/rackd"):
			start(line)
			if !netnstest.WaitFor(5*time.Minute, func() bool {
				out, err := netnstest.Run(ns, "curl", "-fsS", "-H", "Authorization: Bearer "+readToken(tree), "127.0.0.1:5240/api/v1/racks")
				return err == nil && regexp.MustCompile(`"name":\s*"rack2"[^}]*"online":\s*true|"online":\s*true[^}]*"name":\s*"rack2"`).Match(out)
			}) {
				t.Errorf("%s: rack2 was not listed online within 5m", line)
			}
		default:
			t.Errorf("the README's quick start has a line this test does not know how to check: %s", line)
		}
	}
	if ran < 6 {
		t.Errorf("the README's quick start block ran %d commands; the test knows 6:\n%s", ran, block)
	}
	return follows
}

// onlineRack matches a rack listing with an online rack in it.
var onlineRack = regexp.MustCompile(`"online":\s*true`)

// readmeBlock returns the first ```sh block after the line holding
// heading.
func readmeBlock(readme []byte, heading string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(readme))
	var b strings.Builder
	found, in := false, false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !found:
			found = strings.Contains(line, heading)
		case !in && strings.HasPrefix(line, "```sh"):
			in = true
		case in && strings.HasPrefix(line, "```"):
			return b.String(), nil
		case in:
			b.WriteString(line + "\n")
		}
	}
	return "", fmt.Errorf("README.md has no ```sh block after %q", heading)
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v %s", err, out)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// copyTree copies the source tree as git sees it (tracked files and new
// ones not ignored, as they are in the working tree), without .rackplane
// or anything else ignored: a fresh checkout of what is being tested.
func copyTree(t *testing.T, root string) string {
	t.Helper()
	list := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "checkout")
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the working tree
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// socketURL is dbURL through PostgreSQL's Unix socket, which a network
// namespace does not cut off.
func socketURL(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"/var/run/postgresql", "/run/postgresql", "/tmp"} {
		if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL.5432")); err == nil {
			q := u.Query()
			q.Set("host", dir)
			u.RawQuery = q.Encode()
			u.Host = ""
			return u.String()
		}
	}
	t.Fatal("PostgreSQL's Unix socket (.s.PGSQL.5432) is in none of /var/run/postgresql, /run/postgresql, /tmp")
	return ""
}

func readToken(tree string) string {
	b, _ := os.ReadFile(filepath.Join(tree, ".rackplane", "token"))
	return strings.TrimSpace(string(b))
}
