package power

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/template"

	"github.com/rackplane/rackplane/events"
)

// webhookDriver calls an operator's HTTP endpoints.
type webhookDriver struct {
	client *http.Client
}

// maxWebhookBody bounds what is read of an answer.
const maxWebhookBody = 64 << 10

func (webhookDriver) describe() events.PowerDriver {
	return events.PowerDriver{Name: DriverWebhook, Kind: events.PowerDriverBuiltin, Available: true,
		Detail: "HTTP calls to the URL templates of the extras", Actions: events.PowerActions}
}

// webhookExtra reports whether k is an extra the webhook driver takes.
func webhookExtra(k string) bool {
	switch k {
	case "url", "method", "body", "content_type", "status_field":
		return true
	}
	for _, prefix := range []string{"url_", "method_", "body_"} {
		if a, ok := strings.CutPrefix(k, prefix); ok {
			_, known := events.ParsePowerAction(a)
			return known
		}
	}
	return false
}

// webhookData is what the templates see.
type webhookData struct {
	Action, Machine, Address, Username, Password, BootDevice string
	Port                                                     int
	Extra                                                    map[string]string
}

var webhookFuncs = template.FuncMap{
	// json writes a value as JSON, for bodies: {"host": {{json .Address}}}.
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

// setting returns the action's own extra (name_<action>) or the general
// one (name).
func setting(extra map[string]string, name string, a events.PowerAction) string {
	if v, ok := extra[name+"_"+string(a)]; ok {
		return v
	}
	return extra[name]
}

func parseTemplate(name, text string) (*template.Template, error) {
	t, err := template.New(name).Funcs(webhookFuncs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fail(events.PowerOutcomeInvalid, "webhook %s template: %v", name, err)
	}
	return t, nil
}

func (webhookDriver) check(req Request) error {
	extra := req.Parameters.Extra
	if err := checkExtras(DriverWebhook, extra, webhookExtra); err != nil {
		return err
	}
	// Every template given must parse, not only the action's: a broken
	// one is found at the first call, not at the first cycle.
	for k, v := range extra {
		if k == "url" || k == "body" || strings.HasPrefix(k, "url_") || strings.HasPrefix(k, "body_") {
			if _, err := parseTemplate(k, v); err != nil {
				return err
			}
		}
	}
	if setting(extra, "url", req.Action) == "" {
		return fail(events.PowerOutcomeUnsupported, "the webhook has no URL for %s: give extra url_%s or url", req.Action, req.Action)
	}
	if m := setting(extra, "method", req.Action); m != "" && !validMethod(m) {
		return fail(events.PowerOutcomeInvalid, "webhook method %.20q: want GET, POST, PUT, PATCH or DELETE", m)
	}
	return nil
}

func validMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

func render(name, text string, data webhookData) (string, error) {
	t, err := parseTemplate(name, text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", fail(events.PowerOutcomeInvalid, "webhook %s template: %v", name, err)
	}
	return b.String(), nil
}

func (w webhookDriver) run(ctx context.Context, req Request) (string, error) {
	p, a := req.Parameters, req.Action
	data := webhookData{Action: string(a), Machine: req.MachineID, Address: p.Address, Port: p.Port,
		Username: p.Username, Password: p.Password, BootDevice: req.BootDevice, Extra: p.Extra}
	rawURL, err := render("url", setting(p.Extra, "url", a), data)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fail(events.PowerOutcomeInvalid, "webhook URL of %s is not an http or https URL: %.200q", a, rawURL)
	}
	method := setting(p.Extra, "method", a)
	if method == "" {
		method = http.MethodPost
		if a == events.PowerStatus {
			method = http.MethodGet
		}
	}
	// The general body is not sent with a GET: an action's own is.
	bodyText, ok := p.Extra["body_"+string(a)]
	if !ok && method != http.MethodGet {
		bodyText = p.Extra["body"]
	}
	body, err := render("body", bodyText, data)
	if err != nil {
		return "", err
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), strings.NewReader(body))
	if err != nil {
		return "", fail(events.PowerOutcomeInvalid, "webhook request: %v", err)
	}
	if body != "" {
		ct := p.Extra["content_type"]
		if ct == "" {
			ct = "application/json"
		}
		hreq.Header.Set("Content-Type", ct)
	}
	if p.Username != "" {
		hreq.SetBasicAuth(p.Username, p.Password)
	}
	where := method + " " + u.Redacted()
	resp, err := w.client.Do(hreq)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fail(events.PowerOutcomeTimeout, "webhook %s: no answer in time", where)
		}
		return "", fail(events.PowerOutcomeUnreachable, "webhook %s: %v", where, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxWebhookBody+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fail(events.PowerOutcomeTimeout, "webhook %s: the answer did not arrive in time", where)
		}
		return "", fail(events.PowerOutcomeFailed, "webhook %s: reading the answer: %v", where, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", fail(events.PowerOutcomeAuthFailed, "webhook %s: %s%s", where, resp.Status, bodyStart(answer))
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return "", fail(events.PowerOutcomeFailed, "webhook %s: %s%s", where, resp.Status, bodyStart(answer))
	}
	switch a {
	case events.PowerStatus:
		if len(answer) > maxWebhookBody {
			return "", fail(events.PowerOutcomeFailed, "webhook %s: the answer is over %d bytes", where, maxWebhookBody)
		}
		state, err := ParseWebhookStatus(answer, p.Extra["status_field"])
		if err != nil {
			return "", fail(events.PowerOutcomeFailed, "webhook %s: %v", where, err)
		}
		return state, nil
	case events.PowerOn, events.PowerCycle:
		return events.PowerStateOn, nil
	case events.PowerOff:
		return events.PowerStateOff, nil
	}
	return events.PowerStateUnknown, nil
}

// bodyStart quotes the start of an answer's body for an error.
func bodyStart(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	return ": " + strconv.Quote(truncate(s, 512))
}

// statusFields are the members of a JSON answer ParseWebhookStatus looks
// in, in order, when no status_field is given.
var statusFields = []string{"state", "power_state", "power", "status"}

// ParseWebhookStatus reads a power state from a status answer: the body
// itself, on or off (any case, blanks around), or a JSON object whose
// member field (or, when field is empty, the first of state, power_state,
// power and status there is) is on or off, or a JSON boolean there (true
// is on).
func ParseWebhookStatus(body []byte, field string) (string, error) {
	b := bytes.TrimSpace(body)
	if len(b) > 0 && b[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return "", fmt.Errorf("the answer is not a JSON object: %w", err)
		}
		fields := statusFields
		if field != "" {
			fields = []string{field}
		}
		for _, f := range fields {
			raw, ok := obj[f]
			if !ok {
				continue
			}
			if string(raw) == "null" {
				return "", fmt.Errorf("member %q of the answer is neither a string nor a boolean", f)
			}
			var on bool
			if json.Unmarshal(raw, &on) == nil {
				if on {
					return events.PowerStateOn, nil
				}
				return events.PowerStateOff, nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fmt.Errorf("member %q of the answer is neither a string nor a boolean", f)
			}
			return stateWord(s, "member "+strconv.Quote(f)+" of the answer")
		}
		return "", fmt.Errorf("the answer has none of the members %s", strings.Join(fields, ", "))
	}
	return stateWord(string(b), "the answer")
}

func stateWord(s, what string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case events.PowerStateOn:
		return events.PowerStateOn, nil
	case events.PowerStateOff:
		return events.PowerStateOff, nil
	}
	return "", fmt.Errorf("%s is %q, want on or off", what, truncate(s, 80))
}
