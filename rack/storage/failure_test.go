package storage

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

func TestProviderFailures(t *testing.T) {
	thirty := `exec 2>&1; i=1; while [ $i -le 30 ]; do echo "line $i"; [ $((i % 3)) -eq 0 ] && echo "err $i" >&2; i=$((i+1)); done; exit 3`
	cases := []struct {
		name     string
		scripts  map[string]string
		params   string
		chmod    map[string]os.FileMode
		action   string
		req      func(r *Request)
		code     string
		want     []string // in the error message
		notWant  []string
		exitCode int // when the script ran to an exit
	}{
		{name: "missing script", scripts: map[string]string{"grow": ""}, action: "create",
			code: rackplane.EPRECONDITION, want: []string{"script grow is missing"}},
		{name: "not executable", chmod: map[string]os.FileMode{"create": 0o644}, action: "create",
			code: rackplane.EPRECONDITION, want: []string{"script create is not executable"}},
		{name: "script is a directory", scripts: map[string]string{"verify": ""}, action: "create",
			code: rackplane.EPRECONDITION, want: []string{"script verify is not a regular file"}},
		{name: "bad parameters.list", params: "good a parameter\nbad-name oops\n", action: "create",
			code: rackplane.EPRECONDITION, want: []string{"parameters.list", "line 2", "bad-name"}},
		{name: "hangs past timeout", scripts: map[string]string{"create": `echo starting; echo to stderr >&2; sleep 600 & echo $! > "$EXTP_DIR/child"; wait`},
			action: "create", code: rackplane.ETIMEOUT, want: []string{"did not finish within", "starting", "to stderr"}},
		{name: "exits non-zero", scripts: map[string]string{"create": thirty}, action: "create",
			code: rackplane.EUNAVAILABLE, want: []string{"exit status 3", "line 16\n", "err 30", "line 30"}, notWant: []string{"line 15\n"}, exitCode: 3},
		{name: "attach prints garbage", scripts: map[string]string{"attach": `echo "hello world"; echo "::not a uri"`}, action: "attach",
			code: rackplane.EUNAVAILABLE, want: []string{"first line of attach output", "hello world"}, exitCode: 0},
		{name: "attach prints a regular file", scripts: map[string]string{"attach": `echo /etc/hostname`}, action: "attach",
			code: rackplane.EUNAVAILABLE, want: []string{"/etc/hostname is not a block device"}, exitCode: 0},
		{name: "attach prints a missing path", scripts: map[string]string{"attach": `echo /dev/rackplane-nonexistent`}, action: "attach",
			code: rackplane.EUNAVAILABLE, want: []string{"no such file"}, exitCode: 0},
		{name: "attach prints nothing", scripts: map[string]string{"attach": `echo progress >&2`}, action: "attach",
			code: rackplane.EUNAVAILABLE, want: []string{"neither a block device nor an access URI", "progress"}, exitCode: 0},
		{name: "attach prints a bad URI", scripts: map[string]string{"attach": `echo; echo "no scheme here"`}, action: "attach",
			code: rackplane.EUNAVAILABLE, want: []string{"line 2 of attach output"}, exitCode: 0},
		{name: "unknown parameter", action: "create", req: func(r *Request) { r.Parameters["colour"] = "blue" },
			code: rackplane.EINVALID, want: []string{`no parameter "colour"`}},
		{name: "unknown provider", action: "create", req: func(r *Request) { r.Provider = "nosuch" },
			code: rackplane.ENOTFOUND, want: []string{`no storage provider "nosuch"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			search := t.TempDir()
			dir := filepath.Join(search, "p")
			params := tc.params
			if params == "" {
				params = "dir where to write\n"
			}
			writeProvider(t, dir, params, tc.scripts)
			if tc.name == "script is a directory" {
				if err := os.Mkdir(filepath.Join(dir, "verify"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			writeProvider(t, filepath.Join(search, "good"), "dir where\n", nil)
			for f, mode := range tc.chmod {
				if err := os.Chmod(filepath.Join(dir, f), mode); err != nil {
					t.Fatal(err)
				}
			}
			m, pub := newManager(t, Config{SearchPath: []string{search}, ActionTimeout: 400 * time.Millisecond})
			work := t.TempDir()
			id := newVolumeID(t)
			req := Request{VolumeID: id, Machine: "m1", Provider: "p", SizeMiB: 1, Parameters: map[string]string{"dir": work}}
			if tc.action == "attach" {
				// The volume exists as far as the rack knows.
				if _, err := m.Do(context.Background(), "create", req); err != nil {
					t.Fatalf("create: %v", err)
				}
				req = Request{VolumeID: id}
			}
			if tc.req != nil {
				tc.req(&req)
			}
			start := time.Now()
			_, err := m.Do(context.Background(), tc.action, req)
			if err == nil {
				t.Fatal("no error")
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
			if c := rackplane.ErrorCode(err); c != tc.code {
				t.Errorf("code %s, want %s: %v", c, tc.code, err)
			}
			msg := rackplane.ErrorMessage(err)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("error has %q (more than %d lines):\n%s", w, scriptrun.TailLines, msg)
				}
			}

			// A record says what happened.
			rec, found, rerr := m.Record(id)
			if rerr != nil || !found {
				t.Fatalf("no record: %v", rerr)
			}
			if rec.LastOK || rec.LastAction != tc.action || rec.LastError != msg || rec.Pending != "" {
				t.Errorf("record %+v", rec)
			}
			// And an event.
			evs := pub.actions(t)
			last := evs[len(evs)-1]
			if last.OK || last.Action != tc.action || last.ErrorCode != tc.code || last.Error != msg {
				t.Errorf("event %+v", last)
			}
			if tc.exitCode != 0 || strings.HasPrefix(tc.name, "attach prints") {
				if last.ExitCode == nil || *last.ExitCode != tc.exitCode {
					t.Errorf("event exit code %v, want %d", last.ExitCode, tc.exitCode)
				}
			}
			if tc.code == rackplane.ETIMEOUT {
				b, err := os.ReadFile(filepath.Join(work, "child"))
				if err != nil {
					t.Fatal(err)
				}
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				scriptruntest.Eventually(t, "the script's child to be killed", func() bool { return scriptruntest.ProcessGone(pid) })
				if rec.State != events.VolumeStateUnknown {
					t.Errorf("state %s after a create cut short, want unknown", rec.State)
				}
			}

			// The manager keeps serving.
			ok := Request{VolumeID: newVolumeID(t), Machine: "m2", Provider: "good", SizeMiB: 1}
			if _, err := m.Do(context.Background(), "create", ok); err != nil {
				t.Fatalf("after the failure, a good provider fails: %v", err)
			}
		})
	}
}
