package power

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/events"
)

// TestScrubMasksEveryForm: an error text may carry the password as
// written, in a URL (a webhook's error names its URL), quoted, or in a
// JSON body; every form is masked before the text reaches a reply, an
// event or a log line.
func TestScrubMasksEveryForm(t *testing.T) {
	const pw = `p@ss w/rd"&x+é`
	j, _ := json.Marshal(pw)
	for _, tc := range []struct{ name, text string }{
		{"as written", "BMC refused " + pw},
		{"query", "POST http://bmc/on?user=admin&password=" + url.QueryEscape(pw) + ": 500"},
		{"path", "GET http://bmc/" + url.PathEscape(pw) + "/status: 404"},
		{"quoted", fmt.Sprintf("bad answer to %q", pw)},
		{"json", `body {"password":` + string(j) + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := scrub(tc.text, events.PowerParameters{Password: pw})
			if !strings.Contains(got, "****") {
				t.Errorf("%q: nothing masked", got)
			}
			for _, part := range []string{"p@ss", "w/rd", "ss%20w", "ss+w"} {
				if strings.Contains(got, part) {
					t.Errorf("%q still holds %q", got, part)
				}
			}
		})
	}
}
