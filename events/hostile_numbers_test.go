package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
)

const hostileRack = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"

func hostileBootTransfer(t *testing.T, dur string) []byte {
	e, err := events.New(events.RackSource(hostileRack), events.TypeBootTransfer, "rack/"+hostileRack, time.Now(),
		map[string]any{"protocol": "http", "file_name": "x", "route": "root", "bytes": 1, "size": 1, "duration_ms": 1})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := events.Encode(e)
	return []byte(strings.Replace(string(raw), `"duration_ms":1`, `"duration_ms":`+dur, 1))
}

// TestDecodeRefusesAnEscapedTime: an escaped "time" string is refused,
// as json.Unmarshal into Event refuses it (time.Time.UnmarshalJSON does
// not unescape), and as every reader of the log would.
func TestDecodeRefusesAnEscapedTime(t *testing.T) {
	v, _ := events.NewValidator()
	raw := hostileBootTransfer(t, "1")
	s := string(raw)
	i := strings.Index(s, `"time":"`) + len(`"time":"`)
	s = s[:i] + `\u0032` + s[i+1:] // first digit of the year, escaped
	var e events.Event
	if err := json.Unmarshal([]byte(s), &e); err == nil {
		t.Fatal("encoding/json accepts it?")
	}
	if _, err := v.Decode([]byte(s)); err == nil {
		t.Errorf("Decode accepts %s, which json.Unmarshal into Event refuses", s[i-8:i+30])
	}
}

// TestDecodeRefusesAHugeNumber: a number too large for math/big on a
// field with a minimum, as a hostile rack may send it, is refused as
// breaking its schema; it made the schema library panic, which took the
// region down at every redelivery.
func TestDecodeRefusesAHugeNumber(t *testing.T) {
	v, _ := events.NewValidator()
	for _, n := range []string{"1e1000001", "-1e1000001", "1e-1000001"} {
		_, err := v.Decode(hostileBootTransfer(t, n))
		var re *events.RejectError
		if !errors.As(err, &re) || re.Reason != events.ReasonSchema {
			t.Errorf("duration_ms %s: %v, want a refusal as breaking the schema", n, err)
		}
	}
}
