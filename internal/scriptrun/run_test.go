package scriptrun

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

const testMarker = "RACKPLANE_TEST_RUN"

func writeScript(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	thirty := `exec 2>&1; i=1; while [ $i -le 30 ]; do echo "line $i"; [ $((i % 3)) -eq 0 ] && echo "err $i" >&2; i=$((i+1)); done; exit 3`
	cases := []struct {
		name        string
		script      string
		args        []string
		env         []string
		stdoutLimit int
		secrets     []string
		timeout     time.Duration

		wantErr    string // in Err; "" for success
		wantCode   *int
		wantStdout string
		overflow   bool
		wantTail   []string
		timedOut   bool
	}{
		{name: "success", script: `echo out; sleep 0.1; echo err >&2`, stdoutLimit: 100,
			wantCode: ptr(0), wantStdout: "out\n", wantTail: []string{"out", "err"}},
		{name: "arguments", script: `echo "$1|$2"`, args: []string{"a b", "$(c)"}, stdoutLimit: 100,
			wantCode: ptr(0), wantStdout: "a b|$(c)\n", wantTail: []string{"a b|$(c)"}},
		{name: "exactly the environment given", script: `env | grep -v "^` + testMarker + `=" | grep -v '^PWD=' | grep -v '^SHLVL=' | sort`,
			env: []string{"PATH=" + SafePath, "ONLY=this"}, stdoutLimit: 1000,
			wantCode: ptr(0), wantStdout: "ONLY=this\nPATH=" + SafePath + "\n"},
		{name: "exit code", script: thirty, wantErr: "hang failed: exit status 3", wantCode: ptr(3),
			wantTail: tailOfThirty()},
		{name: "stdout limit", script: `echo 0123456789abcdef`, stdoutLimit: 10,
			wantCode: ptr(0), wantStdout: "0123456789", overflow: true, wantTail: []string{"0123456789abcdef"}},
		{name: "secret masked", script: `exec 2>&1; echo "user=root password=hunter2-xyz"; echo hunter2-xyz >&2`, secrets: []string{"hunter2-xyz", ""},
			wantCode: ptr(0), wantTail: []string{"user=root password=" + Mask, Mask}},
		{name: "long line cut", script: `printf '%2000s\n' x | tr ' ' a`,
			wantCode: ptr(0), wantTail: []string{strings.Repeat("a", MaxTailLine)}},
		{name: "timeout", script: `echo starting; exec sleep 600`, timeout: 300 * time.Millisecond,
			wantErr: "hang did not finish within 300ms and was killed", wantTail: []string{"starting"}, timedOut: true},
		{name: "not executable", script: "", wantErr: "start hang"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.script != "" {
				writeScript(t, filepath.Join(dir, "hang"), tc.script)
			} else if err := os.WriteFile(filepath.Join(dir, "hang"), []byte("#!/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			env := tc.env
			if env == nil {
				env = []string{"PATH=" + SafePath}
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 20 * time.Second
			}
			r := Run(context.Background(), Spec{Dir: dir, Path: "hang", Args: tc.args, Env: env, Marker: testMarker,
				Timeout: timeout, StdoutLimit: tc.stdoutLimit, Secrets: tc.secrets})
			if tc.wantErr == "" && r.Err != nil || tc.wantErr != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", r.Err, tc.wantErr)
			}
			if (r.ExitCode == nil) != (tc.wantCode == nil) || r.ExitCode != nil && *r.ExitCode != *tc.wantCode {
				t.Errorf("exit code %v, want %v", deref(r.ExitCode), deref(tc.wantCode))
			}
			if tc.wantStdout != "" && string(r.Stdout) != tc.wantStdout {
				t.Errorf("stdout %q, want %q", r.Stdout, tc.wantStdout)
			}
			if tc.stdoutLimit > 0 && r.Overflow != tc.overflow || r.TimedOut != tc.timedOut {
				t.Errorf("overflow %t timed out %t", r.Overflow, r.TimedOut)
			}
			if tc.wantTail != nil && !slices.Equal(r.Tail, tc.wantTail) {
				t.Errorf("tail %q, want %q", r.Tail, tc.wantTail)
			}
			if r.Started.IsZero() {
				t.Error("no start time")
			}
		})
	}
}

func TestRunNeedsMarkerAndTimeout(t *testing.T) {
	for _, s := range []Spec{{Path: "/bin/true", Timeout: time.Second}, {Path: "/bin/true", Marker: testMarker}} {
		if r := Run(context.Background(), s); r.Err == nil {
			t.Errorf("%+v ran", s)
		}
	}
}

// TestRunCancelKillsGroup: a cancelled run kills the script's children
// and keeps what it printed.
func TestRunCancelKillsGroup(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, filepath.Join(dir, "hang"), "sleep 600 &\necho $! > child\necho waiting\nwait")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	// Run returns once the output is copied: the log is whole then.
	var log strings.Builder
	r := Run(ctx, Spec{Dir: dir, Path: "hang", Env: []string{"PATH=" + SafePath}, Marker: testMarker, Timeout: time.Minute, Log: &log})
	if !r.Cancelled || r.Err == nil || !strings.Contains(r.Err.Error(), "context canceled") {
		t.Fatalf("run %+v", r)
	}
	if len(r.Tail) != 1 || r.Tail[0] != "waiting" || log.String() != "waiting\n" {
		t.Errorf("tail %q log %q", r.Tail, log.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	scriptruntest.Eventually(t, "the child to be killed", func() bool { return scriptruntest.ProcessGone(pid) })
}

func TestTailBuffer(t *testing.T) {
	cases := []struct {
		name    string
		writes  []string
		max     int
		secrets []string
		want    []string
	}{
		{"empty", nil, 100, nil, nil},
		{"newlines only", []string{"\n\n"}, 100, nil, nil},
		{"crlf", []string{"a\r\nb\r\n"}, 100, nil, []string{"a", "b"}},
		{"bad utf-8", []string{"a\xffb\n"}, 100, nil, []string{"a\uFFFDb"}},
		{"cut keeps the end", []string{"first line\n", "second\n"}, 10, nil, []string{"ne", "second"}},
		{"cut drops the partial first line when secrets are masked", []string{"xx pw-secret\n", "second pw-secret\n"}, 20, []string{"pw-secret"},
			[]string{"second " + Mask}},
		{"cut, one line, secrets", []string{strings.Repeat("y", 30)}, 20, []string{"pw"}, nil},
		{"secret across writes", []string{"pass=pw-", "secret\n"}, 100, []string{"pw-secret"}, []string{"pass=" + Mask}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := &tailBuffer{max: tc.max}
			for _, w := range tc.writes {
				_, _ = tb.Write([]byte(w))
			}
			if got := tb.lines(TailLines, tc.secrets); !slices.Equal(got, tc.want) {
				t.Errorf("lines %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTailText(t *testing.T) {
	if got := TailText(nil); got != " (no output)" {
		t.Errorf("%q", got)
	}
	if got := TailText([]string{"a", "b"}); got != "; last output:\na\nb" {
		t.Errorf("%q", got)
	}
}

func ptr(i int) *int { return &i }

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// tailOfThirty is the last TailLines lines the thirty-line script prints.
func tailOfThirty() []string {
	var all []string
	for i := 1; i <= 30; i++ {
		all = append(all, "line "+strconv.Itoa(i))
		if i%3 == 0 {
			all = append(all, "err "+strconv.Itoa(i))
		}
	}
	return all[len(all)-TailLines:]
}

// TestRunDeadline: a deadline of ctx is a timeout, not a cancel.
func TestRunDeadline(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, filepath.Join(dir, "hang"), "exec sleep 600")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := Run(ctx, Spec{Dir: dir, Path: "hang", Env: []string{"PATH=" + SafePath}, Marker: testMarker, Timeout: time.Hour})
	if !r.TimedOut || r.Cancelled || r.Err == nil || r.Err.Error() != "hang did not finish in time and was killed" {
		t.Errorf("run %+v", r)
	}
}
