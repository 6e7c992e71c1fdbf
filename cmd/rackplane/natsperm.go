package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

// runNATSPermissions prints the NATS authorization entry that confines a
// rack to its own subjects. It needs no region: the subject scheme alone
// decides what a rack may touch.
func runNATSPermissions(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nats-permissions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nkey := fs.String("nkey", "", "the rack's nkey public key (U...), for an nkey user")
	user := fs.String("user", "", "user name, for a user/password entry")
	password := fs.String("password", "", "password of -user (better: a bcrypt hash from `nats server passwd`)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rackplane nats-permissions [-nkey KEY | -user NAME -password PW] RACK_ID\n\n"+
			"Prints the entry of a NATS server's authorization users list that lets rack RACK_ID\n"+
			"("+rackdCommand()+" -print-id shows it) do its work and nothing else: it cannot publish or read\n"+
			"another rack's subjects or forge region events.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want exactly one RACK_ID")
	}
	id, err := uuid.Parse(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("rack id %q: %v (%s -print-id -data-dir DIR prints it)", fs.Arg(0), err, rackdCommand())
	}
	if *nkey != "" && *user != "" {
		return fmt.Errorf("give -nkey or -user, not both")
	}
	if *user != "" && *password == "" {
		return fmt.Errorf("-user needs -password")
	}
	if *nkey != "" && (!strings.HasPrefix(*nkey, "U") || len(*nkey) != 56) {
		return fmt.Errorf("-nkey %q: want a user public key, 56 characters starting with U (nk -gen user -pubout)", *nkey)
	}
	perms := events.RackPermissions(id.String()).NATSConfig()
	fmt.Fprintf(stdout, "# rack %s\n{\n", id)
	switch {
	case *nkey != "":
		fmt.Fprintf(stdout, "  nkey: %q\n", *nkey)
	case *user != "":
		fmt.Fprintf(stdout, "  user: %q\n  password: %q\n", *user, *password)
	}
	for _, l := range strings.Split(strings.TrimSuffix(perms, "\n"), "\n") {
		fmt.Fprintf(stdout, "  %s\n", l)
	}
	fmt.Fprintln(stdout, "}")
	return nil
}
