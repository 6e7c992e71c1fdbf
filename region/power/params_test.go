package power_test

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/power"
	"github.com/rackplane/rackplane/region/rackcall"
)

func TestParseSetRequest(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		// says are what the error must name; none: accepted.
		says []string
	}{
		{"script driver", `{"driver":"shellbmc","address":"/run/bmc","username":"u","password":"p","extra":{"note":"x"}}`, nil},
		{"ipmi at 20 bytes", `{"driver":"ipmi","address":"10.0.0.9","port":623,"password":"12345678901234567890"}`, nil},
		{"no password: keeps the stored one", `{"driver":"qemu","address":"/run/vm.qmp"}`, nil},
		{"empty password: none", `{"driver":"webhook","password":""}`, nil},
		{"rack named", `{"driver":"ipmi","rack_id":"0191c1f2-0000-7000-8000-000000000000"}`, nil},
		{"ipmi at 21 bytes", `{"driver":"ipmi","password":"123456789012345678901"}`, []string{"password is 21 bytes: IPMI takes at most 20"}},
		{"other drivers take longer passwords", `{"driver":"webhook","password":"123456789012345678901"}`, nil},
		{"every field at once", `{"driver":"","address":"a\rb","port":-1,"username":"a\u0000","password":"x\ny","extra":{"9x":"v","ok":"a\u0000"},"rack_id":"r1"}`,
			[]string{"driver", "address", "port", "username", "password must be one line", "extra name", "extra ok", "rack_id"}},
		{"upper-case driver", `{"driver":"IPMI"}`, []string{"driver must be"}},
		{"port too high", `{"driver":"ipmi","port":65536}`, []string{"port must be"}},
		{"too many extras", `{"driver":"x","extra":{` + manyExtras(65) + `}}`, []string{"extra has 65 entries"}},
		{"unknown field", `{"driver":"ipmi","pass":"x"}`, []string{`unknown field "pass"`, "the fields are driver, address, port, username, password, extra, rack_id"}},
		{"trailing data", `{"driver":"ipmi"} {}`, []string{"trailing data"}},
		{"wrong type", `{"driver":"ipmi","port":"623"}`, []string{"port: want a whole number, got a string"}},
		{"not json", `{"driver":`, []string{"request body: the JSON ends early"}},
		{"array", `[]`, []string{"request body: want an object, got a list"}},
		{"empty", ``, []string{`the request needs a JSON body: {"driver": "…", "address": "…", "port": 0`, "(required: driver)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := power.ParseSetRequest([]byte(tc.body))
			if len(tc.says) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				checkRequestSchema(t, req)
				return
			}
			if rackplane.ErrorCode(err) != rackplane.EINVALID {
				t.Fatalf("err %v, want invalid", err)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// manyExtras is n distinct extras, as JSON members.
func manyExtras(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"e` + strings.Repeat("x", i) + `":"v"`
	}
	return strings.Join(parts, ",")
}

// checkRequestSchema checks that what was accepted makes a power request
// the rack's schema takes, for every action the API sends.
func checkRequestSchema(t *testing.T, req power.SetRequest) {
	t.Helper()
	p := events.PowerParameters{Address: req.Address, Port: req.Port, Username: req.Username, Extra: req.Extra}
	if req.Password != nil {
		p.Password = *req.Password
	}
	for _, a := range []events.PowerAction{events.PowerOn, events.PowerOff, events.PowerCycle, events.PowerStatus} {
		r := events.PowerRequest{MachineID: "0191c1f2-0000-7000-8000-000000000001", Driver: req.Driver, Action: a, Parameters: p}
		if _, err := rackcall.Encode(events.MethodPower, events.PowerRPCSchema(events.PartRequest), r); err != nil {
			t.Fatalf("accepted %s, but the power request breaks its schema: %v", req, err)
		}
	}
}

func TestSetRequestPrintsNoPassword(t *testing.T) {
	pw := "hunter2-secret"
	req := power.SetRequest{Driver: "ipmi", Password: &pw}
	for _, s := range []string{req.String(), req.GoString()} {
		if strings.Contains(s, pw) {
			t.Errorf("printed the password: %s", s)
		}
	}
}

// FuzzParseSetRequest: whatever a PUT body is, the parser does not
// panic, what it accepts the rack's schema takes, and its refusals never
// quote the password.
func FuzzParseSetRequest(f *testing.F) {
	f.Add([]byte(`{"driver":"ipmi","address":"10.0.0.9","port":623,"username":"admin","password":"pw","extra":{"cipher_suite":"3"}}`))
	f.Add([]byte(`{"driver":"shellbmc","password":"a\nb","rack_id":"x"}`))
	f.Add([]byte(`{"driver":"ipmi","password":"123456789012345678901"}`))
	f.Add([]byte(`{"driver":"q","extra":{"A":"\u0000"}}`))
	f.Add([]byte(`[1,2`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := power.ParseSetRequest(body)
		if err != nil {
			if rackplane.ErrorCode(err) != rackplane.EINVALID {
				t.Fatalf("error of code %s: %v", rackplane.ErrorCode(err), err)
			}
			// The password may be a word of the message by chance: it is
			// quoted only if the message without it does not hold it.
			if req.Password != nil && *req.Password != "" && strings.Contains(err.Error(), *req.Password) {
				other := req
				other.Password = nil
				if oerr := other.Check(); oerr == nil || !strings.Contains(oerr.Error(), *req.Password) {
					t.Fatalf("refusal quotes the password: %v", err)
				}
			}
			return
		}
		checkRequestSchema(t, req)
	})
}
