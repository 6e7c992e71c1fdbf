package storage

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

func TestParseParameters(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string // name=description;… or the error's start
		err  bool
	}{
		{"empty", "", "", false},
		{"ganeti example", "fromsnap Snapshot name to create the volume from\nnas_ip The IP of the NAS appliance\n",
			"fromsnap=Snapshot name to create the volume from;nas_ip=The IP of the NAS appliance", false},
		{"tabs and runs of spaces", "pool\t\t  The pool  \n", "pool=The pool", false},
		{"no description", "pool\n", "pool=", false},
		{"crlf", "a one\r\nb two\r\n", "a=one;b=two", false},
		{"comments and blanks", "# header\n\n   \n  # indented\nx y\n", "x=y", false},
		{"leading space", "   x y\n", "x=y", false},
		{"no final newline", "x y", "x=y", false},
		{"underscore start", "_x y", "_x=y", false},
		{"dash in name", "nas-ip x\n", "line 1: parameter name \"nas-ip\"", true},
		{"digit start", "1x y\n", "line 1: parameter name \"1x\"", true},
		{"dot", "a.b c\n", "line 1: parameter name \"a.b\"", true},
		{"equals", "a=b c\n", "line 1: parameter name \"a=b\"", true},
		{"unicode name", "größe x\n", "line 1: parameter name", true},
		{"repeat", "a x\nb y\na z\n", "line 3: parameter \"a\" repeats line 1", true},
		{"repeat by case", "pool x\nPOOL y\n", "line 2: parameter \"POOL\" repeats line 1", true},
		{"long name", strings.Repeat("a", 65) + " x\n", "line 1: parameter name is 65 characters", true},
		{"control in description", "a x\x1by\n", "line 1: description of \"a\" contains control", true},
		{"NUL", "a x\x00\n", "parameters.list contains a NUL", true},
		{"not UTF-8", "a \xff\n", "parameters.list is not valid UTF-8", true},
		{"huge", strings.Repeat("a b\n", 20000), "parameters.list is 80000 bytes", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := ParseParameters([]byte(tc.in))
			if tc.err {
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Fatalf("err %v, want %q…", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, p := range ps {
				parts = append(parts, p.Name+"="+p.Description)
			}
			if got := strings.Join(parts, ";"); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseAttachOutput(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		device string
		uris   string
		err    string
	}{
		{"device only", "/dev/loop3\n", "/dev/loop3", "", ""},
		{"no newline", "/dev/loop3", "/dev/loop3", "", ""},
		{"device and uris", "/dev/rbd0\nrbd:pool/vol\nkvm+nbd://10.0.0.1:10809/vol\n", "/dev/rbd0", "rbd:pool/vol kvm+nbd://10.0.0.1:10809/vol", ""},
		{"uri only", "\niscsi://10.0.0.2/iqn.2001-04.com.example:disk/1\n", "", "iscsi://10.0.0.2/iqn.2001-04.com.example:disk/1", ""},
		{"blank lines between", "/dev/sdb\n\n\ngluster://h/v\n\n", "/dev/sdb", "gluster://h/v", ""},
		{"surrounding spaces", "  /dev/sdb  \r\n", "/dev/sdb", "", ""},
		{"nothing", "", "", "", "attach printed neither"},
		{"only blank lines", "\n\n  \n", "", "", "attach printed neither"},
		{"relative device", "dev/sdb\n", "", "", "first line of attach output: device path \"dev/sdb\" is not absolute"},
		{"unclean device", "/dev/../etc/passwd\n", "", "", "first line of attach output: device path \"/dev/../etc/passwd\" is not clean"},
		{"words", "Attached successfully to /dev/sdb\n", "", "", "first line of attach output: device path"},
		{"uri without scheme", "/dev/sdb\nfoo/bar\n", "", "", "line 2 of attach output: URI \"foo/bar\" has no scheme"},
		{"uri with space", "/dev/sdb\nrbd:pool/a b\n", "", "", "line 2 of attach output: URI"},
		{"bare scheme", "\nrbd:\n", "", "", "line 2 of attach output: URI \"rbd:\" names nothing"},
		{"binary", "/dev/sdb\n\x00\x01", "", "", "attach output is not text"},
		{"too many uris", "\n" + strings.Repeat("rbd:p/v\n", 17), "", "", "attach printed more than 16 URIs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAttachOutput([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q…", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Device != tc.device || strings.Join(a.URIs, " ") != tc.uris {
				t.Errorf("got %+v", a)
			}
		})
	}
}

func TestVolumeName(t *testing.T) {
	const id = "0190a3c2-2222-7000-8000-000000000002"
	cases := []struct{ machine, want string }{
		{"node-1", "rp-" + id + "-node-1"},
		{"Node_1.Example.COM", "rp-" + id + "-node-1-example-com"},
		{"0190a3c2-3333-7000-8000-000000000003", "rp-" + id + "-0190a3c2-3333-7000-8000-00000000"},
		{"---", "rp-" + id + "-unowned"},
		{"a::b", "rp-" + id + "-a-b"},
		{"ünïcode", "rp-" + id + "-n-code"},
		{strings.Repeat("ab-", 20), "rp-" + id + "-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab"},
	}
	for _, tc := range cases {
		if got := VolumeName(id, tc.machine); got != tc.want {
			t.Errorf("VolumeName(%q) = %q, want %q", tc.machine, got, tc.want)
		}
	}
}

func FuzzParseParameters(f *testing.F) {
	for _, s := range []string{"", "a b\n", "fromsnap Snapshot\nnas_ip IP\n", "# c\n\nx\ty\r\n", "a x\nA y\n", "1 2", "a\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ParseParameters(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		var again strings.Builder
		for _, p := range ps {
			up := strings.ToUpper(p.Name)
			if !paramNameRE.MatchString(p.Name) || len(p.Name) > maxParamName || seen[up] {
				t.Fatalf("accepted parameter name %q", p.Name)
			}
			seen[up] = true
			if strings.IndexFunc(p.Description, isControl) >= 0 || p.Description != strings.TrimSpace(p.Description) {
				t.Fatalf("description %q", p.Description)
			}
			again.WriteString(p.Name + " " + p.Description + "\n")
		}
		// What was accepted reads back the same from its canonical form.
		ps2, err := ParseParameters([]byte(again.String()))
		if err != nil || len(ps2) != len(ps) {
			t.Fatalf("canonical form %q: %v", again.String(), err)
		}
		for i := range ps {
			if ps[i] != ps2[i] {
				t.Fatalf("%+v became %+v", ps[i], ps2[i])
			}
		}
	})
}

func FuzzParseAttachOutput(f *testing.F) {
	for _, s := range []string{"/dev/loop0\n", "\nrbd:p/v\n", "/dev/sdb\nnbd://h:1/x\n\n", "", "x", "/a/../b", "\n\n::"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAttachOutput(b)
		if err != nil {
			return
		}
		if a.Device == "" && len(a.URIs) == 0 {
			t.Fatal("accepted output with neither device nor URI")
		}
		if a.Device != "" && checkDevicePath(a.Device) != nil {
			t.Fatalf("accepted device %q", a.Device)
		}
		if len(a.URIs) > maxURIs {
			t.Fatalf("%d URIs", len(a.URIs))
		}
		out := a.Device + "\n" + strings.Join(a.URIs, "\n")
		for _, u := range a.URIs {
			if checkURI(u) != nil {
				t.Fatalf("accepted URI %q", u)
			}
		}
		a2, err := ParseAttachOutput([]byte(out))
		if err != nil || a2.Device != a.Device || strings.Join(a2.URIs, "\n") != strings.Join(a.URIs, "\n") {
			t.Fatalf("canonical form %q: %+v, %v", out, a2, err)
		}
	})
}

// FuzzDecodeRequest feeds arbitrary rpc bodies to the rack: what it accepts
// gives a snapshot script an environment with nothing a shell, a path or
// an option parser could take for more than a name, and is, encoded
// again, a request the storage rpc's schema accepts.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"volume_id":"0190a3c2-2222-7000-8000-000000000002","snapshot_name":"nightly-1"}`,
		`{"volume_id":"0190a3c2-2222-7000-8000-000000000002","snapshot_name":"../x"}`,
		`{"volume_id":"0190a3c2-2222-7000-8000-000000000002","snapshot_name":"a\nVOL_NAME=x"}`,
		`{"volume_id":"0190a3c2-2222-7000-8000-000000000002","exclusive":true,"action":"snapshot"}`,
		`{"volume_id":"0190a3c2-2222-7000-8000-000000000002","exclusive":"yes"}`, `{}`, `null`, "",
	} {
		f.Add([]byte(s))
	}
	p := Provider{Name: "p", Parameters: []Parameter{{Name: "dir"}}}
	set, err := schema.Default()
	if err != nil {
		f.Fatal(err)
	}
	requestSchema := events.StorageRPCSchema(Method(ActionSnapshot), events.PartRequest)
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeRequest(b)
		if err == nil {
			err = checkRequest(req)
		}
		if err != nil {
			if rackplane.ErrorCode(err) != rackplane.EINVALID {
				t.Fatalf("%q: %v", b, err)
			}
			return
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := set.ValidateJSON(requestSchema, again); err != nil {
			t.Fatalf("%q is accepted, but as a request it breaks %s: %v", again, requestSchema, err)
		}
		rec := Record{VolumeID: req.VolumeID, Name: VolumeName(req.VolumeID, "m"), Machine: "m", SizeMiB: 1, Parameters: req.Parameters}
		for _, kv := range environment(ActionSnapshot, rec, req, p, 0) {
			if strings.ContainsAny(kv, "\x00\n") && !strings.HasPrefix(kv, "EXTP_") {
				t.Fatalf("environment entry %q", kv)
			}
			// An empty name never gets this far: precheck wants one.
			if v, ok := strings.CutPrefix(kv, "VOL_SNAPSHOT_NAME="); ok && v != "" {
				if strings.ContainsAny(v, "/ $`;") || v[0] == '-' || v[0] == '.' || len(v) > 64 {
					t.Fatalf("snapshot name %q accepted", v)
				}
			}
		}
	})
}
