package power

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/jsonbody"
)

// Limits of power_rpc.request.v1.json, checked here so that parameters no
// rack would take are refused when they are set, not at the first action.
const (
	maxAddress  = 1024
	maxUsername = 256
	maxPassword = 1024
	maxExtras   = 64
	maxExtraLen = 4096
	// IPMIPasswordMax is IPMI 2.0's limit on a password (20 bytes);
	// ipmitool would cut a longer one, and the BMC refuse it.
	IPMIPasswordMax = 20
	// MaxBody bounds a PUT body.
	MaxBody = 64 << 10
)

// DriverIPMI is the rack's built-in IPMI driver.
const DriverIPMI = "ipmi"

var (
	// driverRE is the rule of driver names, script drivers' included
	// (a script driver is a directory named after it).
	driverRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	extraRE  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// SetRequest is the body of PUT /api/v1/machines/{id}/power. Password
// absent keeps the password stored before (so that changing an address
// does not need the secret again); "" removes it. RackID names the rack
// that drives the machine; absent, the machine's boot rack does.
type SetRequest struct {
	Driver   string            `json:"driver"`
	Address  string            `json:"address"`
	Port     int               `json:"port"`
	Username string            `json:"username"`
	Password *string           `json:"password,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
	RackID   string            `json:"rack_id,omitempty"`
}

// String leaves the password out, so that no %v prints it.
func (r SetRequest) String() string {
	return fmt.Sprintf("{driver:%s address:%s port:%d username:%s password:%s extra:%v rack_id:%s}",
		r.Driver, r.Address, r.Port, r.Username, maskedPtr(r.Password), r.Extra, r.RackID)
}

// GoString leaves the password out of %#v.
func (r SetRequest) GoString() string { return "power.SetRequest" + r.String() }

func maskedPtr(p *string) string {
	switch {
	case p == nil:
		return "(unchanged)"
	case *p == "":
		return "(none)"
	}
	return "(set)"
}

// ParseSetRequest reads a PUT body: one JSON object, no unknown field, no
// trailing data, then Check. Errors never quote the password.
func ParseSetRequest(body []byte) (SetRequest, error) {
	var r SetRequest
	if len(body) > MaxBody {
		return r, rackplane.Errorf(rackplane.EINVALID, "request body over %d bytes", MaxBody)
	}
	// jsonbody's messages name fields and kinds of values, never the
	// values of strings: the password stays out of them.
	if err := jsonbody.Decode(body, &r, "driver"); err != nil {
		return SetRequest{}, err
	}
	return r, r.Check()
}

// Check names every bad field in one error.
func (r SetRequest) Check() error {
	var bad []string
	add := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if !driverRE.MatchString(r.Driver) {
		add("driver must be a power driver's name (lower-case letters, digits, '_', '.', '-', starting with a letter or digit; at most 64), such as ipmi, qemu, webhook or a script driver's directory")
	}
	if msg := textProblem(r.Address, maxAddress); msg != "" {
		add("address %s", msg)
	}
	if r.Port < 0 || r.Port > 65535 {
		add("port must be 0 (the driver's default) to 65535")
	}
	if msg := textProblem(r.Username, maxUsername); msg != "" {
		add("username %s", msg)
	}
	if r.Password != nil {
		if msg := textProblem(*r.Password, maxPassword); msg != "" {
			add("password %s", msg)
		} else if r.Driver == DriverIPMI && len(*r.Password) > IPMIPasswordMax {
			add("password is %d bytes: IPMI takes at most %d", len(*r.Password), IPMIPasswordMax)
		}
	}
	if len(r.Extra) > maxExtras {
		add("extra has %d entries: at most %d", len(r.Extra), maxExtras)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		if !extraRE.MatchString(k) {
			add("extra name %.70q must be lower-case letters, digits and '_', starting with a letter (at most 64)", k)
			continue
		}
		if v := r.Extra[k]; len(v) > maxExtraLen || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			add("extra %s must be text without NUL, at most %d bytes", k, maxExtraLen)
		}
	}
	if r.RackID != "" {
		if _, err := uuid.Parse(r.RackID); err != nil || len(r.RackID) != 36 {
			add("rack_id must be a rack's id (a UUID)")
		}
	}
	if len(bad) > 0 {
		return rackplane.Errorf(rackplane.EINVALID, "invalid power parameters: %s", strings.Join(bad, "; "))
	}
	return nil
}

// textProblem says what is wrong with a one-line text field, without
// quoting it.
func textProblem(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("is %d bytes: at most %d", len(s), max)
	case !utf8.ValidString(s):
		return "must be UTF-8 text"
	case strings.ContainsAny(s, "\x00\r\n"):
		return "must be one line (no NUL, CR or LF)"
	}
	return ""
}
