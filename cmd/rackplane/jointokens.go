package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/rackplane/rackplane/region/api"
)

// runJoinToken manages the join tokens new racks join NATS with.
func runJoinToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: rackplane join-token create [-ttl 24h] | list | revoke ID")
	}
	fs := flag.NewFlagSet("join-token "+args[0], flag.ContinueOnError)
	c := clientFlags(fs)
	switch args[0] {
	case "create":
		ttl := fs.Duration("ttl", 24*time.Hour, "how long racks may join with it")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		var out struct {
			Token, ID string
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := c.send(ctx, "POST", "/api/v1/join-tokens", map[string]string{"ttl": ttl.String()}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "join token %s, valid until %s (shown this once; racks take it with -join-token-file or RACKPLANE_JOIN_TOKEN):\n",
			out.ID, out.ExpiresAt.Local().Format(time.DateTime))
		fmt.Fprintln(stdout, out.Token)
		return nil
	case "list":
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		var out struct {
			JoinTokens []struct {
				ID        string
				CreatedBy string     `json:"created_by"`
				CreatedAt time.Time  `json:"created_at"`
				ExpiresAt time.Time  `json:"expires_at"`
				RevokedAt *time.Time `json:"revoked_at"`
				Racks     int
			} `json:"join_tokens"`
		}
		if err := c.get(ctx, "/api/v1/join-tokens", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED BY\tCREATED\tEXPIRES\tREVOKED\tRACKS")
		for _, t := range out.JoinTokens {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", t.ID, t.CreatedBy, t.CreatedAt.Local().Format(time.DateTime),
				t.ExpiresAt.Local().Format(time.DateTime), orDash(t.RevokedAt), t.Racks)
		}
		return tw.Flush()
	case "revoke":
		return deleteByID(ctx, c, fs, args[1:], stderr, "join-token revoke", "/api/v1/join-tokens/")
	}
	return fmt.Errorf("unknown join-token command %q (want create, list or revoke)", args[0])
}

// runRackRevoke revokes a rack's NATS credential: the region refuses the
// rack from now on and disconnects it.
func runRackRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rack revoke", flag.ContinueOnError)
	c := clientFlags(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rackplane rack revoke [flags] RACK  (its name or id)")
	}
	id, err := c.rackID(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	var out struct {
		NKey         string `json:"nkey"`
		Disconnected int    `json:"disconnected"`
		Warning      string `json:"warning"`
	}
	if err := c.send(ctx, "DELETE", "/api/v1/racks/"+url.PathEscape(id)+"/credential", nil, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rack %s revoked (nkey %s); %d connections closed\n", fs.Arg(0), out.NKey, out.Disconnected)
	if out.Warning != "" {
		fmt.Fprintln(stderr, "warning:", out.Warning)
	}
	return nil
}

// runRackRetire retires a rack, given by id or by name: it leaves the
// racks for good and its NATS credential is revoked. The region refuses
// it, saying why, while the rack is online or in use.
func runRackRetire(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("racks retire", flag.ContinueOnError)
	c := clientFlags(fs)
	reason := fs.String("reason", "", "why, for the event log")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rackplane racks retire [flags] RACK (a rack id, or the name of one rack)")
	}
	// A name several racks share is refused here even when one of them is
	// online: which one goes is for the operator to say.
	id, err := c.resolveRack(ctx, fs.Arg(0), false)
	if err != nil {
		return err
	}
	var out api.RackRetirement
	path := "/api/v1/racks/" + url.PathEscape(id)
	if *reason != "" {
		path += "?" + url.Values{"reason": {*reason}}.Encode()
	}
	if err := c.send(ctx, "DELETE", path, nil, &out); err != nil {
		return err
	}
	if out.AlreadyRetired {
		fmt.Fprintf(stdout, "rack %s (%s) was retired already, %s by %s\n", out.Name, id, out.RetiredAt.Local().Format(time.DateTime), out.RetiredBy)
		return nil
	}
	cred := "it had no NATS credential of the region's (it joined an open NATS server)"
	if out.Credential != nil {
		cred = fmt.Sprintf("its NATS credential (nkey %s) is revoked, %d connections closed", out.Credential.NKey, out.Disconnected)
	}
	fmt.Fprintf(stdout, "rack %s (%s) retired; %s; %d consumers of the region stream deleted\n", out.Name, id, cred, out.ConsumersDeleted)
	if out.Warning != "" {
		fmt.Fprintln(stderr, "warning:", out.Warning)
	}
	return nil
}
