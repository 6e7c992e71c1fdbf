package power

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

// The parsers of what comes from outside the rack's code (a script's
// output, an endpoint's answer, ipmitool's output, a QMP server, an rpc
// body) must take anything: no panic, an answer that is on or off or an
// error, and errors of bounded length.

func checkState(t *testing.T, state string, err error) {
	t.Helper()
	if err == nil && state != events.PowerStateOn && state != events.PowerStateOff {
		t.Fatalf("state %q without error", state)
	}
	if err != nil && (state != "" || len(err.Error()) > 1024) {
		t.Fatalf("state %q with error %.2000q", state, err)
	}
}

func FuzzParseScriptStatus(f *testing.F) {
	for _, s := range []string{"on\n", "OFF", "\n\n  on  \n", "standby\n", "", "on\noff\n", "\xff\xfe", strings.Repeat("o", 5000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		state, err := ParseScriptStatus(out)
		checkState(t, state, err)
	})
}

func FuzzParseWebhookStatus(f *testing.F) {
	for _, s := range [][2]string{{"on", ""}, {`{"state":"off"}`, ""}, {`{"power":true}`, ""}, {`{"x":"on"}`, "x"},
		{`{"state":null}`, ""}, {`{"state":{"a":1}}`, ""}, {`{`, ""}, {`[1,2]`, ""}, {"\x00", ""}} {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, body []byte, field string) {
		state, err := ParseWebhookStatus(body, field)
		if err != nil && len(field) > 200 {
			return // the field name is the operator's, quoted as given
		}
		checkState(t, state, err)
	})
}

func FuzzParseIPMIPowerStatus(f *testing.F) {
	for _, s := range []string{"Chassis Power is on\n", "Discovered IPMB address 0x0\nChassis Power is off\r\n", "Chassis Power is unknown", "", "\x00\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		state, err := ParseIPMIPowerStatus(out)
		checkState(t, state, err)
	})
}

func FuzzClassifyIPMIFailure(f *testing.F) {
	for _, s := range []string{"> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session",
		"Get Auth Capabilities error", "Unsupported cipher suite ID : 99", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		got := ClassifyIPMIFailure(strings.Split(out, "\n"))
		if !slices.Contains([]string{events.PowerOutcomeAuthFailed, events.PowerOutcomeUnreachable, events.PowerOutcomeFailed}, got) {
			t.Fatalf("outcome %q", got)
		}
	})
}

// nopCloser closes nothing: the fuzzed session reads from memory.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// FuzzQMPSession plays a QMP server's side of a session from the fuzzer's
// bytes: greeting, the answer to qmp_capabilities, events, the answer to
// query-status.
func FuzzQMPSession(f *testing.F) {
	greeting := `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\n"
	for _, s := range []string{
		greeting + `{"return": {}, "id": "1"}` + "\n" + `{"event": "RESUME", "timestamp": {}}` + "\n" + `{"return": {"status": "running", "running": true}, "id": "2"}` + "\n",
		greeting + `{"return": {}, "id": "1"}` + "\n" + `{"error": {"class": "GenericError", "desc": "no"}, "id": "2"}` + "\n",
		greeting + `{"return": {}, "id": "1"}` + "\n" + `{"return": {"status": 7}, "id": "2"}` + "\n",
		greeting + `{"return": {}, "id": "1"}` + "\n" + `{"return": {}, "id": "3"}` + "\n",
		greeting + `{"id": "1"}`, greeting, `{"hello": 1}`, "", "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		var sent bytes.Buffer
		q, err := newQMP(bytes.NewReader(stream), &sent, nopCloser{}, "fuzz")
		if err != nil {
			if outcomeOf(err) == events.PowerOutcomeOK {
				t.Fatalf("error %v without an outcome", err)
			}
			return
		}
		st, err := q.status()
		if err == nil {
			_, _ = qemuState(st)
		}
		// What the rack sent is its own commands, one JSON object a line.
		for _, line := range strings.Split(strings.TrimSpace(sent.String()), "\n") {
			var cmd map[string]string
			if err := json.Unmarshal([]byte(line), &cmd); err != nil || cmd["execute"] == "" {
				t.Fatalf("sent %q", line)
			}
		}
	})
}

func FuzzParseQMPStatus(f *testing.F) {
	for _, s := range []string{`{"status": "running", "running": true}`, `{"status": ""}`, `{}`, `null`, `[]`, `{"status": 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, ret []byte) {
		st, err := ParseQMPStatus(ret)
		if err == nil && st == "" {
			t.Fatal("empty status without error")
		}
	})
}

// FuzzDecodeRequest: the rpc body is checked by the schema and decoded;
// whatever passes is a request checkRequest accepts too (the schema and
// the code agree), and a refusal never quotes the body's password.
func FuzzDecodeRequest(f *testing.F) {
	set, err := schema.Default()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"machine_id": "m1", "driver": "ipmi", "action": "on", "parameters": {"address": "10.0.0.1", "password": "Fuzz-Password-1"}}`,
		`{"machine_id": "m1", "driver": "x", "action": "set_boot", "boot_device": "pxe", "parameters": {"extra": {"a": "b"}}}`,
		`{"machine_id": "m1", "driver": "x", "action": "on", "parameters": {"password": "Fuzz-Password-1\n"}}`,
		`{"machine_id": "m1", "driver": "x", "action": "on", "parameters": {"port": 99999, "password": "Fuzz-Password-1"}}`,
		`{"machine_id": "m1", "driver": "x", "action": "on", "parameters": {}} {}`,
		`[]`, `{`, ``, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(set, data)
		if err == nil {
			if cerr := checkRequest(req); cerr != nil {
				t.Fatalf("the schema took %s, checkRequest refuses it: %v", data, cerr)
			}
			return
		}
		var body struct {
			Parameters struct {
				Password string `json:"password"`
			} `json:"parameters"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		if dec.Decode(&body) == nil && len(body.Parameters.Password) >= 6 && strings.Contains(err.Error(), body.Parameters.Password) {
			t.Fatalf("the refusal quotes the password: %v", err)
		}
		_, _ = io.Copy(io.Discard, dec.Buffered())
	})
}
