package postgres_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestDecodeMachine: machines with every column set, with every nullable
// one NULL, with empty and long arrays, text that is not ASCII, times
// before 2000 and past 2038, and a hardware summary, read from their
// binary form as pgx's Scan reads them, field for field.
func TestDecodeMachine(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	_, err := db.Pool().Exec(ctx, `
		INSERT INTO machines (id, hostname, macs, arch, boot_rack_id, status, status_reason, origin, os, release, subarch,
			image_version_id, deploy_rack_id, preseed_name, preseed_version, deployment_id, deploy_started_at, deployed_at,
			created_at, updated_at, version, boot_file, power_state, power_checked_at, power_outcome, power_error, tags)
		VALUES
		('11111111-1111-4111-8111-111111111111', 'a-full', '{52:54:00:00:00:01,52:54:00:00:00:02}', 'arm64',
		 '22222222-2222-4222-8222-222222222222', 'deployed', 'réason "quoted" \ and ✓', 'discovered', 'ubuntu', 'noble', 'generic',
		 'v-20260101', '33333333-3333-4333-8333-333333333333', 'custom', 9223372036854775807, '44444444-4444-4444-8444-444444444444',
		 '1999-12-31 23:59:59.999999+00', '2040-06-01 12:00:00.000001+02', '1970-01-01 00:00:00+00', '2026-11-30 10:11:12.131415+00',
		 42, 'grubx64.efi', 'on', '2026-11-30 10:00:00+00', 'failed', 'BMC said: ☠', '{gpu,"rack 7",zz}'),
		('55555555-5555-4555-8555-555555555555', 'b-bare', '{}', 'amd64', NULL, 'new', '', 'api', '', '', '',
		 '', NULL, '', 0, NULL, NULL, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', 1, '', 'unknown', NULL, '', '', '{}'),
		('66666666-6666-4666-8666-666666666666', 'c-many', (SELECT array_agg('52:54:00:00:01:' || lpad(to_hex(i), 2, '0')) FROM generate_series(0, 200) i),
		 'ppc64el', NULL, 'ready', '', 'api', '', '', '', '', NULL, '', -1, NULL, NULL, NULL,
		 '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', -5, '', 'off', NULL, '', '', '{""}')`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Pool().Exec(ctx, `
		INSERT INTO machine_hardware (machine_id, inventory, arch, cpu_model, cpu_sockets, cpu_cores, cpu_threads, memory_bytes,
			memory_total_bytes, disk_count, disk_bytes, largest_disk_bytes, nic_count, firmware, secure_boot, collected_at,
			reported_at, rack_id, operation_id, event_id)
		VALUES ('11111111-1111-4111-8111-111111111111', '{}', 'arm64', 'X', 1, 64, 128, 274877906944, 274877906944, 3,
			12000000000000, 8000000000000, 2, 'uefi', true, now(), now(), '22222222-2222-4222-8222-222222222222', 'op',
			'77777777-7777-4777-8777-777777777777')`)
	if err != nil {
		t.Fatal(err)
	}
	decoded, scanned, taken, err := postgres.MachinesBothWays(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(decoded) != 3 {
		t.Fatalf("%d machines read, want 3", len(decoded))
	}
	for i := range decoded {
		if !taken[i] {
			t.Errorf("%s: not decoded", scanned[i].Hostname)
		}
		if !reflect.DeepEqual(decoded[i], scanned[i]) {
			t.Errorf("%s decoded as\n%+v\npgx scans\n%+v", scanned[i].Hostname, decoded[i], scanned[i])
		}
	}
	if decoded[0].Hardware == nil || decoded[0].Hardware.Cores != 64 || len(decoded[2].MACs) != 201 || decoded[1].BootRackID != nil {
		t.Errorf("the rows are not what was inserted: %+v", decoded)
	}
}
