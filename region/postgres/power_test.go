package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
	"github.com/rackplane/rackplane/region/secrets"
)

// TestPowerProjection: power parameters and the racks' outcomes make the
// machine's power state, only from the rack that drives it and never
// moving its version; the password is sealed apart, follows key
// rotation, survives a rebuild and goes with the machine.
func TestPowerProjection(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	oldKey, err := secrets.ParseKey(secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(oldKey)
	bootRack, chosenRack, otherRack := uuid.NewString(), uuid.NewString(), uuid.NewString()
	id := uuid.NewString()
	newEvent := func(source, typ string, data any) events.Event {
		t.Helper()
		e, err := events.New(source, typ, events.MachineStreamName(id), time.Now(), data)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(e); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		return e
	}
	if err := db.AppendMachine(ctx, id, machine.NoMachine, []events.Event{newEvent(events.RegionSource, events.TypeMachineCreated,
		events.MachineState{MachineID: id, Hostname: "pw", MACs: []string{"52:54:00:ee:02:01"}, Arch: "amd64", Origin: "api",
			Status: events.MachineNew, BootRackID: bootRack})}); err != nil {
		t.Fatal(err)
	}
	created, err := db.GetMachine(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	const password = "pw-of-the-bmc"
	set := func(rackID string) {
		t.Helper()
		sealed := kr.SealSecret(postgres.PowerSecretName(id), []byte(password))
		e := newEvent(events.RegionSource, events.TypePowerParametersSet, events.PowerParametersSet{MachineID: id, Driver: "ipmi",
			Address: "10.0.0.9", Username: "admin", Extra: map[string]string{}, RackID: rackID, PasswordSet: true, PasswordFingerprint: sealed.Fingerprint})
		if err := db.SetPower(ctx, &sealed, e); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now().UTC().Add(-time.Minute)
	outcome := func(rackID, state string, at time.Time) {
		t.Helper()
		e := newEvent(events.RackSource(rackID), events.TypePowerActionCompleted, events.PowerActionCompleted{MachineID: id, Driver: "ipmi",
			Action: events.PowerStatus, State: state, OK: true, Outcome: events.PowerOutcomeOK, StartedAt: at, DurationMS: 5})
		if err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := db.AppendAny(ctx, tx, []events.Event{e})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	// A sealed password must be what the event says.
	wrong := kr.SealSecret(postgres.PowerSecretName(id), []byte("another"))
	bad := newEvent(events.RegionSource, events.TypePowerParametersSet, events.PowerParametersSet{MachineID: id, Driver: "ipmi",
		Extra: map[string]string{}, PasswordSet: true, PasswordFingerprint: kr.Fingerprint("power", []byte(password))})
	if err := db.SetPower(ctx, &wrong, bad); err == nil {
		t.Fatal("stored a password the event does not describe")
	}

	set("")
	for _, step := range []struct {
		name  string
		do    func()
		state string
	}{
		{"no outcome yet", func() {}, events.PowerStateUnknown},
		{"another rack's outcome changes nothing", func() { outcome(otherRack, events.PowerStateOn, start) }, events.PowerStateUnknown},
		{"the boot rack drives it", func() { outcome(bootRack, events.PowerStateOn, start) }, events.PowerStateOn},
		{"a late older outcome changes nothing", func() { outcome(bootRack, events.PowerStateOff, start.Add(-time.Second)) }, events.PowerStateOn},
		{"a rack named in the parameters drives it", func() { set(chosenRack); outcome(chosenRack, events.PowerStateOff, start.Add(time.Second)) }, events.PowerStateOff},
		{"then the boot rack no longer does", func() { outcome(bootRack, events.PowerStateOn, start.Add(2*time.Second)) }, events.PowerStateOff},
	} {
		step.do()
		m, err := db.GetMachine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.PowerState != step.state || m.Version != created.Version || !m.UpdatedAt.Equal(created.UpdatedAt) {
			t.Fatalf("%s: power %s, version %d, updated %s; want %s, version %d, updated %s", step.name, m.PowerState, m.Version,
				m.UpdatedAt, step.state, created.Version, created.UpdatedAt)
		}
	}

	// Key rotation reseals the password with the rest.
	newKey, err := secrets.ParseKey(secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := db.ResealSecrets(ctx, secrets.NewKeyring(newKey, oldKey), time.Now())
	if err != nil || rep.Resealed != 1 {
		t.Fatalf("reseal: %+v %v", rep, err)
	}
	if got, err := db.OpenSecret(ctx, secrets.NewKeyring(newKey), postgres.PowerSecretName(id)); err != nil || string(got) != password {
		t.Fatalf("after rotation, with the new key alone: %q %v", got, err)
	}

	// A rebuild from the log alone gives the same parameters and state.
	before, err := db.GetPower(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := db.GetPower(ctx, id)
	if err != nil || after.RackID != chosenRack || after.PasswordFingerprint != before.PasswordFingerprint || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("after rebuild: %+v %v; before %+v", after, err, before)
	}
	if m, _ := db.GetMachine(ctx, id); m.PowerState != events.PowerStateOff || m.Version != created.Version {
		t.Fatalf("after rebuild: power %s version %d", m.PowerState, m.Version)
	}

	// Deleting the machine deletes its password.
	if err := db.AppendMachine(ctx, id, created.Version, []events.Event{newEvent(events.RegionSource, events.TypeMachineDeleted,
		events.MachineRef{MachineID: id})}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetPower(ctx, id); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Errorf("power parameters of a deleted machine: %v", err)
	}
	if _, err := db.OpenSecret(ctx, secrets.NewKeyring(newKey), postgres.PowerSecretName(id)); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Errorf("password of a deleted machine: %v", err)
	}
}
