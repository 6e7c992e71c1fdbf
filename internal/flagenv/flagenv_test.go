package flagenv

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, "def"},
		{"environment", nil, map[string]string{"RACKPLANE_HTTP_ADDR": "env"}, "env"},
		{"flag wins", []string{"-http-addr", "flag"}, map[string]string{"RACKPLANE_HTTP_ADDR": "env"}, "flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			v := fs.String("http-addr", "def", "")
			err := Parse(fs, tt.args, func(k string) (string, bool) { s, ok := tt.env[k]; return s, ok })
			if err != nil || *v != tt.want {
				t.Fatalf("got %q, %v; want %q", *v, err, tt.want)
			}
		})
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("n", 1, "")
	if err := Parse(fs, nil, func(string) (string, bool) { return "abc", true }); err == nil {
		t.Fatal("a bad value in the environment was accepted")
	}
}

func TestList(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{" a , b,,c ", []string{"a", "b", "c"}},
		{",", nil},
	} {
		got := []string{"before"}
		if err := List(&got)(tt.in); err != nil || strings.Join(got, "|") != strings.Join(tt.want, "|") || (tt.want == nil) != (got == nil) {
			t.Errorf("List(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestParseNamesEveryProblem: one Parse names every bad flag of the
// command line and of the environment, each with what to give instead,
// and still takes the good ones and the arguments after the flags.
func TestParseNamesEveryProblem(t *testing.T) {
	newSet := func() (*flag.FlagSet, *string, *int) {
		fs := flag.NewFlagSet("regiond", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		addr := fs.String("http-addr", "def", "address of the API")
		n := fs.Int("heartbeat-misses", 3, "")
		fs.Duration("deploy-timeout", time.Hour, "")
		fs.Bool("no-nats-callout", false, "")
		fs.Uint("ingest-batch", 1, "")
		fs.Func("tftp-addr", "", func(s string) error {
			if !strings.Contains(s, ":") {
				return errors.New("want host:port")
			}
			return nil
		})
		return fs, addr, n
	}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		want     []string
		wantArgs []string
	}{
		{"every bad flag at once", []string{"-heartbeat-misses", "x", "-deploy-timeout=soon", "-bogus", "-no-nats-callout=maybe",
			"-ingest-batch", "-1", "-tftp-addr", "nope", "-http-addr", "127.0.0.1:1"}, nil,
			[]string{`-heartbeat-misses "x": want a whole number`, `-deploy-timeout "soon": want a duration such as 30s, 5m or 1h30m`,
				"-bogus: no such flag (-h lists the flags)", `-no-nats-callout "maybe": want true or false`,
				`-ingest-batch "-1": want a whole number, 0 or more`, `-tftp-addr "nope": want host:port`}, nil},
		{"a misspelt flag", []string{"-http-adr", "x", "y"}, nil, []string{"-http-adr: no such flag; did you mean -http-addr?"}, []string{"y"}},
		{"a value missing at the end", []string{"-http-addr"}, nil, []string{"-http-addr: needs a value: address of the API"}, nil},
		{"bad syntax", []string{"---x", "-=y"}, nil, []string{`"---x": not a flag`, `"-=y": not a flag`}, nil},
		{"the environment too", []string{"-bogus"}, map[string]string{"RACKPLANE_HEARTBEAT_MISSES": "many", "RACKPLANE_DEPLOY_TIMEOUT": "1"},
			[]string{"-bogus: no such flag", `RACKPLANE_HEARTBEAT_MISSES="many" (for -heartbeat-misses): want a whole number`,
				`RACKPLANE_DEPLOY_TIMEOUT="1" (for -deploy-timeout): want a duration`}, nil},
		{"arguments after the flags", []string{"-http-addr=a", "token", "create", "-x"}, nil, nil, []string{"token", "create", "-x"}},
		{"after --", []string{"--", "-http-addr"}, nil, nil, []string{"-http-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _, _ := newSet()
			err := Parse(fs, tt.args, func(k string) (string, bool) { s, ok := tt.env[k]; return s, ok })
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if err == nil {
					t.Fatal("accepted")
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%q missing from:\n%v", w, err)
					}
				}
				if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.want) {
					t.Errorf("%d problems, want %d:\n%v", n, len(tt.want), err)
				}
				if strings.Contains(err.Error(), "strconv") || strings.Contains(err.Error(), "parse error") {
					t.Errorf("Go's parser shows through: %v", err)
				}
			}
			if tt.wantArgs != nil && !slices.Equal(fs.Args(), tt.wantArgs) {
				t.Errorf("args %q, want %q", fs.Args(), tt.wantArgs)
			}
		})
	}
	fs, addr, n := newSet()
	if err := Parse(fs, []string{"-bogus", "-http-addr", "good", "-heartbeat-misses", "7"}, nil); err == nil || *addr != "good" || *n != 7 {
		t.Errorf("the good flags beside a bad one: %q %d %v", *addr, *n, err)
	}
	// A value a flag refuses leaves its default, which Validate then
	// does not report a second time as a bad setting.
	fs, _, n = newSet()
	if err := Parse(fs, []string{"-heartbeat-misses", "x"}, func(string) (string, bool) { return "", false }); err == nil || *n != 3 {
		t.Errorf("-heartbeat-misses x: %d %v, want the default 3 kept", *n, err)
	}
	fs, _, n = newSet()
	if err := Parse(fs, nil, func(k string) (string, bool) { return "x", k == "RACKPLANE_HEARTBEAT_MISSES" }); err == nil || *n != 3 {
		t.Errorf("RACKPLANE_HEARTBEAT_MISSES=x: %d %v, want the default 3 kept", *n, err)
	}
	// A misspelt flag's value is not taken for an argument.
	fs, _, _ = newSet()
	if err := Parse(fs, []string{"-http-adr", "1", "-heartbeat-misses", "x"}, nil); err == nil || len(fs.Args()) != 0 ||
		!strings.Contains(err.Error(), "-heartbeat-misses") {
		t.Errorf("-http-adr 1 -heartbeat-misses x: args %q, %v", fs.Args(), err)
	}
	fs, _, _ = newSet()
	if err := Parse(fs, []string{"-bogus", "-h"}, nil); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

// FuzzParse: any command line is parsed or refused, never a panic, and a
// refusal names something.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"-a\x00x", "-a=1\x00-b", "--\x00-a", "-\x00-b=", "---x", "-=", "-h", "-n\x00", "-n=x\x00-zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("a", "", "")
		fs.Bool("b", false, "")
		fs.Int("n", 0, "")
		err := Parse(fs, strings.Split(line, "\x00"), func(string) (string, bool) { return "", false })
		if err != nil && !errors.Is(err, flag.ErrHelp) && err.Error() == "" {
			t.Fatal("an empty error")
		}
	})
}
