package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
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
