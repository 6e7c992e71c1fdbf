package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/flagenv"
)

// client is a small client of the region's API.
type client struct {
	base  string
	token string
	// tokenFrom says where token came from, for a refusal's message.
	tokenFrom string
	http      *http.Client
}

func clientFlags(fs *flag.FlagSet) *client {
	c := &client{http: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.base, "api", "http://127.0.0.1:5240", "the region's API: a URL such as http://127.0.0.1:5240, or host:port (http is assumed)")
	fs.StringVar(&c.token, "token", "", "API token (default: the file "+tokenFile+" in this directory, which rackplane dev writes, when it exists)")
	return c
}

// tokenFile is where `rackplane dev` keeps its bootstrap token; the client
// uses it when no token is given, so the dev loop needs no setup.
const tokenFile = ".rackplane/token"

// endpoint is the URL of path on the region: -api is a URL, or a
// host:port taken as http.
func (c *client) endpoint(path string) (string, error) {
	base := strings.TrimSpace(c.base)
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("-api %q: want the region's URL, such as http://127.0.0.1:5240 (or its host:port)", c.base)
	}
	return strings.TrimRight(u.String(), "/") + path, nil
}

func (c *client) get(ctx context.Context, path string, q url.Values, out any) error {
	u, err := c.endpoint(path)
	if err != nil {
		return err
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	return c.do(req, out)
}

func (c *client) do(req *http.Request, out any) error {
	if c.token != "" && c.tokenFrom == "" {
		c.tokenFrom = "-token or RACKPLANE_TOKEN"
	}
	if c.token == "" {
		if b, err := os.ReadFile(tokenFile); err == nil {
			c.token, c.tokenFrom = strings.TrimSpace(string(b)), tokenFile
		}
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(req, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("region API: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			msg := e.Error.Message
			if e.Error.Code == rackplane.EUNAUTHORIZED {
				msg = c.tokenHelp(msg)
			}
			return &rackplane.Error{Code: e.Error.Code, Message: fmt.Sprintf("%s (%s)", msg, resp.Status)}
		}
		return fmt.Errorf("region API: %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = body
		return nil
	}
	return json.Unmarshal(body, out)
}

// tokenHelp adds to the region's refusal of a request's token where the
// client looks for one, by every name.
func (c *client) tokenHelp(msg string) string {
	file := tokenFile
	if abs, err := filepath.Abs(tokenFile); err == nil {
		file = abs
	}
	if c.token == "" {
		return fmt.Sprintf("the region wants an API token and none was given: give one with the flag -token TOKEN, "+
			"or the environment variable RACKPLANE_TOKEN=TOKEN, or put it in the file %s (looked for at %s; "+
			"rackplane dev writes its token there, in the directory it runs in)", tokenFile, file)
	}
	return fmt.Sprintf("%s; the token from %s was refused (revoked, or made for another region's database): give another with -token, "+
		"RACKPLANE_TOKEN or the file %s", msg, c.tokenFrom, tokenFile)
}

// unreachable says why the region did not answer at all, and where the
// client looked for it.
func (c *client) unreachable(req *http.Request, err error) error {
	where := req.URL.Scheme + "://" + req.URL.Host
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing answers at %s: start the region (go run ./cmd/rackplane dev, or regiond), "+
			"or give its address with -api or RACKPLANE_API\n(%w)", where, err)
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return fmt.Errorf("the region at %s did not answer in time\n(%w)", where, err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("the host of -api %s is not known here (%s)\n(%w)", where, dnsErr.Err, err)
	}
	return fmt.Errorf("region API at %s: %w", where, err)
}

func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	flagenv.Usage(fs, "usage: rackplane "+fs.Name()+" [flags]")
	return flagenv.Parse(fs, interspersed(fs, args), nil)
}

// interspersed moves the flags in args before the arguments, so that
// `rackplane deploy node1 -os debian` means what it says (the flag
// package stops at the first argument); after "--" everything is an
// argument. A flag that is not a boolean takes the next word as its
// value when it has no "=".
func interspersed(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil || hasValue {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return append(append(flags, "--"), rest...)
}

func runRacks(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "retire" {
		return runRackRetire(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("racks", flag.ContinueOnError)
	c := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	retired := fs.Bool("retired", false, "list the retired racks instead")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	var q url.Values
	if *retired {
		q = url.Values{"retired": {"true"}}
	}
	var out struct {
		Racks []rackplane.Rack `json:"racks"`
	}
	if *asJSON {
		var raw json.RawMessage
		if err := c.get(ctx, "/api/v1/racks", q, &raw); err != nil {
			return err
		}
		_, err := stdout.Write(raw)
		return err
	}
	if err := c.get(ctx, "/api/v1/racks", q, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tVERSION\tLAST SEEN")
	for _, r := range out.Racks {
		status := "offline"
		switch {
		case r.RetiredAt != nil:
			status = "retired " + r.RetiredAt.Local().Format(time.DateTime) + " by " + r.RetiredBy
		case r.Online:
			status = "online"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, status, r.Version, r.LastSeen.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func runRack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "revoke" {
		return runRackRevoke(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "retire" {
		return runRackRetire(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("rack", flag.ContinueOnError)
	c := clientFlags(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rackplane rack [flags] RACK  (its name or id)")
	}
	id, err := c.rackID(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.get(ctx, "/api/v1/racks/"+url.PathEscape(id), nil, &raw); err != nil {
		return err
	}
	_, err = stdout.Write(raw)
	return err
}

type storedEvent struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Subject string          `json:"subject"`
	Source  string          `json:"source"`
	Time    time.Time       `json:"time"`
	Data    json.RawMessage `json:"data"`
}

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	c := clientFlags(fs)
	follow := fs.Bool("f", false, "follow: keep printing new events")
	after := fs.String("after", "", "start after this cursor")
	stream := fs.String("stream", "", "only this stream, such as rack/<id>")
	typ := fs.String("type", "", "only this event type")
	asJSON := fs.Bool("json", false, "print each event as a JSON line")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	cursor := *after
	// Following, the region holds each request at the end of the log until
	// the next event (up to 25 s, within the client's 30 s timeout), so
	// there is no polling interval to add.
	return pages(ctx, *follow, 0, func() (bool, error) {
		q := url.Values{"limit": {pageSize}}
		if cursor != "" {
			q.Set("after", cursor)
		}
		if *follow {
			q.Set("wait", "25s")
		}
		if *stream != "" {
			q.Set("stream", *stream)
		}
		if *typ != "" {
			q.Set("type", *typ)
		}
		var page struct {
			Events []json.RawMessage `json:"events"`
			Next   string            `json:"next"`
		}
		if err := c.get(ctx, "/api/v1/events", q, &page); err != nil {
			return false, err
		}
		for _, raw := range page.Events {
			if *asJSON {
				fmt.Fprintf(stdout, "%s\n", compact(raw))
				continue
			}
			var e storedEvent
			if err := json.Unmarshal(raw, &e); err != nil {
				return false, err
			}
			fmt.Fprintf(stdout, "%s  %-45s %-42s %s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Type, e.Subject, compact(e.Data))
		}
		cursor = page.Next
		return len(page.Events) == pageSizeN, nil
	})
}

const (
	pageSize  = "500"
	pageSizeN = 500
)

// pages calls page until it reports a page that was not full; with follow
// it then polls every wait until ctx ends (Ctrl-C), which is not an error.
func pages(ctx context.Context, follow bool, wait time.Duration, page func() (full bool, err error)) error {
	for {
		full, err := page()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if full {
			continue
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func compact(raw []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

func runRejected(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rejected", flag.ContinueOnError)
	c := clientFlags(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	var out struct {
		Rejected []struct {
			ReceivedAt  time.Time `json:"received_at"`
			NATSSubject string    `json:"nats_subject"`
			Reason      string    `json:"reason"`
			Detail      string    `json:"detail"`
		} `json:"rejected_events"`
	}
	if err := c.get(ctx, "/api/v1/rejected-events", nil, &out); err != nil {
		return err
	}
	for _, r := range out.Rejected {
		fmt.Fprintf(stdout, "%s  %-14s %s\n    %s\n", r.ReceivedAt.Local().Format(time.DateTime), r.Reason, r.NATSSubject, r.Detail)
	}
	return nil
}

func runVersion(stdout io.Writer) error {
	_, err := fmt.Fprintln(stdout, "rackplane", rackplane.Version)
	return err
}
