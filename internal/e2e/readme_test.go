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
