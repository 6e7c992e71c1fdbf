package rack

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseReport(t *testing.T) {
	long := strings.Repeat("é", 600)
	cases := []struct {
		name, contentType, body string
		want                    installReport
		err                     string
	}{
		{"curl --data", "application/x-www-form-urlencoded", "result=success", installReport{Result: "success"}, ""},
		{"form with message", "application/x-www-form-urlencoded", "result=failure&message=no+disk%21", installReport{"failure", "no disk!"}, ""},
		{"no content type", "", "result=success&message=ok", installReport{"success", "ok"}, ""},
		{"JSON", "application/json; charset=utf-8", `{"result": "failure", "message": "kernel panic"}`, installReport{"failure", "kernel panic"}, ""},
		{"long message is cut on a rune", "", "result=failure&message=" + long, installReport{"failure", long[:1024]}, ""},
		{"no result", "", "message=hi", installReport{}, "result must be success or failure"},
		{"unknown result", "", "result=done", installReport{}, "result must be success or failure"},
		{"broken form", "", "result=%zz", installReport{}, "unreadable report"},
		{"broken JSON", "application/json", `{"result":`, installReport{}, "unreadable report"},
		{"JSON of the wrong shape", "application/json", `["success"]`, installReport{}, "unreadable report"},
		// PostgreSQL keeps no NUL in the event's JSON: the region could never
		// take such a report, and a queued one would hold up the rest.
		{"NUL in the message", "application/json", `{"result":"failure","message":"a\u0000b"}`, installReport{"failure", "a\uFFFDb"}, ""},
		{"NUL in a form", "", "result=failure&message=a%00b", installReport{"failure", "a\uFFFDb"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseReport(c.contentType, strings.NewReader(c.body))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v %v, want %+v", got, err, c.want)
			}
		})
	}
}

// FuzzParseReport: whatever an installer sends, the report is refused or
// is one the region's schema accepts.
func FuzzParseReport(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "result=success&message=ok")
	f.Add("application/json", `{"result":"failure","message":"x"}`)
	f.Add("", "result=failure&message=%ff%fe")
	f.Add("text/plain", "result=success&result=failure")
	f.Add("", "result=failure&message=%00")
	f.Fuzz(func(t *testing.T, contentType, body string) {
		rep, err := parseReport(contentType, strings.NewReader(body))
		if err != nil {
			return
		}
		if rep.Result != "success" && rep.Result != "failure" {
			t.Fatalf("result %q accepted", rep.Result)
		}
		if len(rep.Message) > 1024 || !utf8.ValidString(rep.Message) || strings.ContainsRune(rep.Message, 0) {
			t.Fatalf("message %q of %d bytes, valid UTF-8 %v", rep.Message, len(rep.Message), utf8.ValidString(rep.Message))
		}
	})
}
