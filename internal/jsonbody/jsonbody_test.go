package jsonbody

import (
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
)

type port struct {
	Number int `json:"number"`
}

// machine is shaped like the API's machine request.
type machine struct {
	Hostname *string   `json:"hostname"`
	MACs     *[]string `json:"macs"`
	Arch     string    `json:"arch"`
	Cores    int       `json:"cores"`
}

type nested struct {
	Name   string       `json:"name"`
	Port   port         `json:"port"`
	Ports  []port       `json:"ports"`
	CIDR   netip.Prefix `json:"cidr"`
	Labels map[string]string
}

// TestMessages: each way a body can be wrong gets a message in the
// client's terms, naming the field and the kind of value it wants, never
// Go's type names or the body's strings.
func TestMessages(t *testing.T) {
	tests := []struct {
		name string
		body string
		v    func() any
		want []string
	}{
		{"a number for a string", `{"hostname": 5, "macs": []}`, newMachine,
			[]string{"hostname: want a string, got a number"}},
		{"a string for a number", `{"cores": "8"}`, newMachine, []string{"cores: want a whole number, got a string"}},
		{"a fraction for a whole number", `{"cores": 1.5}`, newMachine, []string{"cores: want a whole number, got the number 1.5"}},
		{"a string for a list", `{"macs": "52:54:00:12:34:56"}`, newMachine, []string{"macs: want a list, got a string"}},
		{"a list item of the wrong kind", `{"macs": [1]}`, newMachine,
			[]string{"macs: want a list whose items are each a string, got a number among them"}},
		{"a nested field", `{"port": {"number": "x"}}`, newNested, []string{"port.number: want a whole number, got a string"}},
		{"a field in a list of objects", `{"ports": [{"number": true}]}`, newNested,
			[]string{"ports.number: want a whole number, got true or false"}},
		{"an object where a string goes", `{"name": {}}`, newNested, []string{"name: want a string, got an object"}},
		{"not an object", `["node1"]`, newMachine, []string{"want an object, got a list"}},
		{"an unknown field, with the fields there are", `{"hostname": "n1", "mac": "x"}`, newMachine,
			[]string{`unknown field "mac"`, "(the fields are hostname, macs, arch, cores)"}},
		{"an unknown field among nested objects", `{"port": {"nr": 1}}`, newNested, []string{`unknown field "nr"`}},
		{"a syntax error, by line and column", "{\n  \"hostname\": \"n1\",\n  \"macs\": [52:54]\n}", newMachine,
			[]string{"not valid JSON at line 3, column 14 (byte 35)", "unexpected character after array element"}},
		{"a body cut short", `{"hostname": "n1", "macs": [`, newMachine,
			[]string{"the JSON ends early, at line 1, column 29 (byte 28)"}},
		{"an empty body", ``, newMachine,
			[]string{`the request needs a JSON body: {"hostname": "…", "macs": ["…"], "arch": "…", "cores": 0} (required: hostname, macs)`}},
		{"only white space", " \n", newMachine, []string{"the request needs a JSON body", "(required: hostname, macs)"}},
		{"an empty body, nested shape", ``, newNested,
			[]string{`"port": {"number": 0}, "ports": [{…}], "cidr": "…", "Labels": {…}`}},
		{"trailing data", `{"hostname": "n1"} {}`, newMachine, []string{"trailing data after the JSON value (at line 1, column 20 (byte 19))"}},
		{"a field's own decoder refuses", `{"cidr": "10.0.0.0"}`, newNested, []string{"request body:", "10.0.0.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.v()
			required := []string(nil)
			if _, ok := v.(*machine); ok {
				required = []string{"hostname", "macs"}
			}
			err := Decode([]byte(tt.body), v, required...)
			if err == nil {
				t.Fatal("accepted")
			}
			if code := rackplane.ErrorCode(err); code != rackplane.EINVALID {
				t.Errorf("code %s, want invalid", code)
			}
			msg := rackplane.ErrorMessage(err)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q missing from %q", w, msg)
				}
			}
			for _, goName := range []string{"Go struct", "Go value", "jsonbody.", "machine.", "of type", "json: "} {
				if strings.Contains(msg, goName) {
					t.Errorf("%q names Go's %q", msg, goName)
				}
			}
		})
	}
	var m machine
	if err := Decode([]byte(`{"hostname": "n1", "macs": ["52:54:00:12:34:56"]}`), &m); err != nil || *m.Hostname != "n1" {
		t.Errorf("a good body: %v %+v", err, m)
	}
}

// TestSecretsStayOut: what a body holds never comes back in a message, a
// password cut short or followed by a syntax error included.
func TestSecretsStayOut(t *testing.T) {
	type power struct {
		Driver   string  `json:"driver"`
		Password *string `json:"password"`
		Port     int     `json:"port"`
	}
	for _, body := range []string{
		`{"driver": "ipmi", "password": "Hunter2pw" "port": 623}`,
		`{"driver": "ipmi", "password": "Hunter2pw`,
		`{"driver": "ipmi", "password": "Hunter2pw", "port": "Hunter2pw"}`,
		`{"driver": "ipmi", "password": Hunter2pw}`,
		`{"driver": "ipmi", "password": ["Hunter2pw"]}`,
	} {
		var p power
		err := Decode([]byte(body), &p)
		if err == nil {
			t.Fatalf("%s: accepted", body)
		}
		if msg := rackplane.ErrorMessage(err); strings.Contains(msg, "Hunter") || strings.Contains(msg, "'H'") {
			t.Errorf("%s: the message shows the password: %q", body, msg)
		}
	}
}

// FuzzDecode: any body is decoded or refused as invalid with a short,
// valid UTF-8 message; nothing panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"hostname":5}`, `{"macs":[1]}`, `{"x":1}`, "{\n\"a\":", `[]`, `{"port":{"number":"x"}}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{newMachine(), newNested()} {
			err := Decode(body, v, "hostname")
			if err == nil {
				continue
			}
			if code := rackplane.ErrorCode(err); code != rackplane.EINVALID {
				t.Fatalf("code %s for %q", code, body)
			}
			msg := rackplane.ErrorMessage(err)
			if !utf8.ValidString(msg) && utf8.Valid(body) || len(msg) > 600 {
				t.Fatalf("message %q for %q", msg, body)
			}
		}
	})
}

func newMachine() any { return new(machine) }
func newNested() any  { return new(nested) }
