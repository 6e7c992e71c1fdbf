package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"
)

func (c *client) send(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u, err := c.endpoint(path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.do(req, out)
}

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: rackplane token create|list|revoke")
	}
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	c := clientFlags(fs)
	switch args[0] {
	case "create":
		name := fs.String("name", "", "what the token is for")
		actor := fs.String("actor", "", "who acts with it (default: you)")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		var out struct{ Token, ID, Actor string }
		if err := c.send(ctx, "POST", "/api/v1/tokens", map[string]string{"name": *name, "actor": *actor}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %s for %s (shown this once):\n", out.ID, out.Actor)
		fmt.Fprintln(stdout, out.Token)
		return nil
	case "list":
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		var out struct {
			Tokens []struct {
				ID, Name, Actor string
				CreatedAt       time.Time  `json:"created_at"`
				RevokedAt       *time.Time `json:"revoked_at"`
			}
		}
		if err := c.get(ctx, "/api/v1/tokens", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tACTOR\tCREATED\tREVOKED")
		for _, t := range out.Tokens {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Actor, t.CreatedAt.Local().Format(time.DateTime), orDash(t.RevokedAt))
		}
		return tw.Flush()
	case "revoke":
		return deleteByID(ctx, c, fs, args[1:], stderr, "token revoke", "/api/v1/tokens/")
	}
	return fmt.Errorf("unknown token command %q (want create, list or revoke)", args[0])
}

// orDash is t in local time, or "-" when there is none.
func orDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// deleteByID parses args (flags, then one ID) into fs and sends DELETE
// prefix+ID; cmd names the command in the usage message.
func deleteByID(ctx context.Context, c *client, fs *flag.FlagSet, args []string, stderr io.Writer, cmd, prefix string) error {
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rackplane %s [flags] ID", cmd)
	}
	return c.send(ctx, "DELETE", prefix+url.PathEscape(fs.Arg(0)), nil, nil)
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	c := clientFlags(fs)
	follow := fs.Bool("f", false, "follow: keep printing new entries")
	actor := fs.String("actor", "", "only this actor")
	action := fs.String("action", "", "only this action, such as \"PUT /api/v1/preseeds/{name}\"")
	target := fs.String("target", "", "only this target (and what is under it)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	after := "0"
	return pages(ctx, *follow, time.Second, func() (bool, error) {
		q := url.Values{"after": {after}, "limit": {pageSize}}
		for k, v := range map[string]string{"actor": *actor, "action": *action, "target": *target} {
			if v != "" {
				q.Set(k, v)
			}
		}
		var page struct {
			Entries []struct {
				At                                     time.Time
				Actor, Action, Target, Outcome, Detail string
				Status                                 int
				Before, After                          json.RawMessage
			}
			Next int64
		}
		if err := c.get(ctx, "/api/v1/audit", q, &page); err != nil {
			return false, err
		}
		for _, e := range page.Entries {
			fmt.Fprintf(stdout, "%s  %-10s %-7s %d %s  %s", e.At.Local().Format("2006-01-02 15:04:05"), e.Actor, e.Outcome, e.Status, e.Action, e.Target)
			if len(e.Before) > 0 || len(e.After) > 0 {
				fmt.Fprintf(stdout, "  %s -> %s", compact(e.Before), compact(e.After))
			}
			if e.Detail != "" {
				fmt.Fprintf(stdout, "  (%s)", e.Detail)
			}
			fmt.Fprintln(stdout)
		}
		after = fmt.Sprint(page.Next)
		return len(page.Entries) == pageSizeN, nil
	})
}
