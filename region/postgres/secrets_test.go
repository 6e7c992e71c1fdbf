package postgres_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/migrations"
	"github.com/rackplane/rackplane/region/osregistry"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
	"github.com/rackplane/rackplane/region/secrets"
)

// dumpSecrets returns every row of the tables that hold secrets or their
// traces, as JSON (bytea as \x hex).
func dumpSecrets(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT coalesce((SELECT json_agg(l)::text FROM licence_keys l), '') ||
		coalesce((SELECT json_agg(s)::text FROM sealed_secrets s), '')`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// notIn fails t when the dump holds key, in clear, as hex or as its bare
// SHA-256.
func notIn(t *testing.T, what, dump, key string) {
	t.Helper()
	sum := sha256.Sum256([]byte(key))
	for _, form := range []string{key, hex.EncodeToString([]byte(key)), hex.EncodeToString(sum[:])} {
		if strings.Contains(dump, form) {
			t.Errorf("%s holds %q:\n%s", what, form, dump)
		}
	}
}

func keyring(t *testing.T, keys ...*secrets.Key) *secrets.Keyring {
	t.Helper()
	return secrets.NewKeyring(keys[0], keys[1:]...)
}

func newKey(t *testing.T) *secrets.Key {
	t.Helper()
	k, err := secrets.ParseKey(secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestClearLicenceKeysSealedOnUpgrade: a database an earlier version left,
// with a licence key in clear and its bare SHA-256, is migrated and
// re-sealed as a region's start does; then the key is nowhere in clear,
// its fingerprint is keyed, and it still renders.
func TestClearLicenceKeysSealedOnUpgrade(t *testing.T) {
	ctx := context.Background()
	log := regiontest.Logger()
	pool := pgtest.NewPool(t)
	if _, err := migrations.ApplyBefore(ctx, pool, log, "0012"); err != nil {
		t.Fatal(err)
	}
	const key = "ABCDE-12345-FGHIJ-67890-KLMNO"
	bare := sha256.Sum256([]byte(key))
	if _, err := pool.Exec(ctx, `INSERT INTO licence_keys (os, release, key, masked, fingerprint, validated_by, set_at)
		VALUES ('windows', 'win2022', $1, $2, $3, $4, now())`, key, osregistry.Mask(key), hex.EncodeToString(bare[:]), uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	db := postgres.New(pool, log)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	kr := keyring(t, newKey(t))
	// Between the migration and the re-seal the key still renders.
	if got, err := db.LicenceKeyFor(ctx, kr, "windows", "win2022"); err != nil || got != key {
		t.Fatalf("before the re-seal: %q %v", got, err)
	}
	rep, err := db.ResealSecrets(ctx, kr, time.Now())
	if err != nil || rep.Sealed != 1 || rep.Current != 0 || rep.Resealed != 0 || rep.Unreadable != 0 {
		t.Fatalf("re-seal: %+v %v", rep, err)
	}
	notIn(t, "the database", dumpSecrets(t, pool), key)
	var unsealed, keyCol int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM sealed_secrets WHERE unsealed IS NOT NULL),
		(SELECT count(*) FROM information_schema.columns WHERE table_name = 'licence_keys' AND column_name IN ('key', 'fingerprint'))`).Scan(&unsealed, &keyCol); err != nil {
		t.Fatal(err)
	}
	if unsealed != 0 || keyCol != 0 {
		t.Errorf("%d values left unsealed, %d clear columns left in licence_keys", unsealed, keyCol)
	}
	if got, err := db.LicenceKeyFor(ctx, kr, "windows", "win2022"); err != nil || got != key {
		t.Fatalf("after the re-seal: %q %v", got, err)
	}
	keys, err := db.LicenceKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k := keys[[2]string{"windows", "win2022"}]; k.Fingerprint != kr.Fingerprint("licence_key", []byte(key)) || k.Masked != osregistry.Mask(key) {
		t.Errorf("stored %+v; want the keyed fingerprint %s", k, kr.Fingerprint("licence_key", []byte(key)))
	}
	if rep, err := db.ResealSecrets(ctx, kr, time.Now()); err != nil || rep.Current != 1 || rep.Sealed+rep.Resealed+rep.Unreadable != 0 {
		t.Errorf("second re-seal: %+v %v", rep, err)
	}
}

// setLicenceKey stores key for os/win2022 as the OS registry does.
func setLicenceKey(t *testing.T, db *postgres.DB, kr *secrets.Keyring, release, key string) {
	t.Helper()
	sealed := kr.SealSecret(postgres.LicenceKeyName("windows", release), []byte(key))
	ev, err := events.New(events.RegionSource, events.TypeLicenceKeySet, "os/windows/"+release, time.Now(),
		events.LicenceKeySet{OS: "windows", Release: release, Masked: osregistry.Mask(key), Fingerprint: sealed.Fingerprint, ValidatedBy: uuid.NewString()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetLicenceKey(context.Background(), sealed, ev); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsKeyRotation follows an operator's rotation: the new key as
// current with the old one kept for reading re-seals everything; then the
// old key can go. A region given neither, or a value moved under another
// name, opens nothing and changes nothing.
func TestSecretsKeyRotation(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	oldKey, next := newKey(t), newKey(t)
	old := keyring(t, oldKey)
	keys := map[string]string{"win2019": "AAAAA-11111-BBBBB-22222-CCCCC", "win2022": "DDDDD-33333-EEEEE-44444-FFFFF"}
	for rel, k := range keys {
		setLicenceKey(t, db, old, rel, k)
	}
	fingerprints := func() map[string]string {
		ks, err := db.LicenceKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for k, v := range ks {
			out[k[1]] = v.Fingerprint
		}
		return out
	}
	before := fingerprints()

	for _, step := range []struct {
		name string
		kr   *secrets.Keyring
		want postgres.ResealReport
		// opens: whether the keys render afterwards with kr.
		opens bool
	}{
		{"old key only: nothing to do", old, postgres.ResealReport{Current: 2}, true},
		{"a stranger key: nothing opens, nothing changes", keyring(t, newKey(t)), postgres.ResealReport{Unreadable: 2, UnreadableKeys: []string{oldKey.ID()}}, false},
		{"new key with the old kept", keyring(t, next, oldKey), postgres.ResealReport{Resealed: 2}, true},
		{"new key alone", keyring(t, next), postgres.ResealReport{Current: 2}, true},
		{"back to the old key alone", old, postgres.ResealReport{Unreadable: 2, UnreadableKeys: []string{next.ID()}}, false},
	} {
		t.Run(step.name, func(t *testing.T) {
			rep, err := db.ResealSecrets(ctx, step.kr, time.Now())
			if err != nil || rep.Current != step.want.Current || rep.Resealed != step.want.Resealed || rep.Sealed != 0 ||
				rep.Unreadable != step.want.Unreadable || strings.Join(rep.UnreadableKeys, ",") != strings.Join(step.want.UnreadableKeys, ",") {
				t.Fatalf("re-seal: %+v %v; want %+v", rep, err, step.want)
			}
			for rel, k := range keys {
				got, err := db.LicenceKeyFor(ctx, step.kr, "windows", rel)
				if step.opens && (err != nil || got != k) {
					t.Errorf("%s: %q %v", rel, got, err)
				}
				if !step.opens && (rackplane.ErrorCode(err) != rackplane.EUNAVAILABLE || got != "") {
					t.Errorf("%s: %q %v, want unavailable", rel, got, err)
				}
			}
		})
	}
	after := fingerprints()
	for rel, k := range keys {
		if after[rel] == before[rel] || after[rel] != keyring(t, next).Fingerprint("licence_key", []byte(k)) {
			t.Errorf("%s fingerprint %s → %s: want the new key's", rel, before[rel], after[rel])
		}
	}
	notIn(t, "the database", dumpSecrets(t, db.Pool()), keys["win2019"])

	// A value moved under another name does not open there.
	if _, err := db.Pool().Exec(ctx, `UPDATE sealed_secrets SET sealed = (SELECT sealed FROM sealed_secrets WHERE name = $1) WHERE name = $2`,
		postgres.LicenceKeyName("windows", "win2019"), postgres.LicenceKeyName("windows", "win2022")); err != nil {
		t.Fatal(err)
	}
	if got, err := db.LicenceKeyFor(ctx, keyring(t, next), "windows", "win2022"); rackplane.ErrorCode(err) != rackplane.EUNAVAILABLE || got != "" {
		t.Errorf("swapped value: %q %v, want unavailable", got, err)
	}
	if _, err := db.LicenceKeyFor(ctx, old, "windows", "nope"); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Errorf("no key: %v, want not found", err)
	}
}

// TestInstallStatusSecretSealed: the secret install status tokens derive
// from is sealed at rest; one an earlier version left in clear moves under
// the key with its bytes (tokens already in preseeds stay good), and a key
// rotation keeps them.
func TestInstallStatusSecretSealed(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	db := postgres.New(pool, regiontest.Logger())
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	legacy := []byte("0123456789abcdef0123456789abcdef")
	if _, err := pool.Exec(ctx, `INSERT INTO region_secrets (name, secret) VALUES ('install-status', $1)`, legacy); err != nil {
		t.Fatal(err)
	}
	k1 := newKey(t)
	got, err := db.SealedRegionSecret(ctx, keyring(t, k1), "install-status")
	if err != nil || string(got) != string(legacy) {
		t.Fatalf("secret after the upgrade: %q %v, want the clear one's bytes", got, err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM region_secrets WHERE name = 'install-status'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d clear copies left (%v)", left, err)
	}
	dump := dumpSecrets(t, pool)
	notIn(t, "sealed_secrets", dump, string(legacy))
	notIn(t, "sealed_secrets", dump, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=") // its base64
	if !strings.Contains(dump, "region/install-status") {
		t.Fatalf("no sealed install-status secret:\n%s", dump)
	}

	// Another key does not open it; after a rotation the bytes are the same.
	if _, err := db.SealedRegionSecret(ctx, keyring(t, newKey(t)), "install-status"); rackplane.ErrorCode(err) != rackplane.EUNAVAILABLE {
		t.Fatalf("with a key it is not under: %v, want unavailable", err)
	}
	k2 := newKey(t)
	if rep, err := db.ResealSecrets(ctx, keyring(t, k2, k1), time.Now()); err != nil || rep.Resealed != 1 {
		t.Fatalf("reseal: %+v %v", rep, err)
	}
	if got, err := db.SealedRegionSecret(ctx, keyring(t, k2), "install-status"); err != nil || string(got) != string(legacy) {
		t.Fatalf("after rotation: %q %v", got, err)
	}

	// A fresh database makes one, the same for every caller.
	fresh := postgres.New(pgtest.NewPool(t), regiontest.Logger())
	if err := fresh.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := fresh.SealedRegionSecret(ctx, keyring(t, k1), "install-status")
	if err != nil || len(a) != 32 {
		t.Fatalf("new secret: %x %v", a, err)
	}
	if b, err := fresh.SealedRegionSecret(ctx, keyring(t, k1), "install-status"); err != nil || string(a) != string(b) {
		t.Fatalf("second read %x %v, want %x", b, err, a)
	}
}
