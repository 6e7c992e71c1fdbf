package osregistry

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

func img(rack, name string, online bool, os, release, arch, version string) postgres.ImageOnRack {
	return postgres.ImageOnRack{RackID: rack, RackName: name, Online: online, OS: os, Release: release,
		Arch: arch, Subarch: "generic", VersionID: os + "/" + release + "/" + arch + "/" + version, Version: version}
}

func TestGroup(t *testing.T) {
	noKeys := map[[2]string]postgres.LicenceKey{}
	for _, tc := range []struct {
		name string
		imgs []postgres.ImageOnRack
		keys map[[2]string]postgres.LicenceKey
		want []Entry
	}{
		{name: "nothing is an empty list, not null", keys: noKeys, want: []Entry{}},
		{
			name: "one entry per os/release/arch/subarch, a rack's versions together",
			imgs: []postgres.ImageOnRack{
				img("r1", "rack-b", true, "ubuntu", "noble", "amd64", "2"),
				img("r1", "rack-b", true, "ubuntu", "noble", "amd64", "1"),
			},
			keys: noKeys,
			want: []Entry{{OS: "ubuntu", Release: "noble", Arch: "amd64", Subarch: "generic", Available: true,
				Racks: []EntryRack{{ID: "r1", Name: "rack-b", Online: true, Versions: []VersionBrief{
					{ID: "ubuntu/noble/amd64/2", Version: "2"}, {ID: "ubuntu/noble/amd64/1", Version: "1"}}}}}},
		},
		{
			name: "offline racks only: listed but not available; racks sorted by name",
			imgs: []postgres.ImageOnRack{
				img("r2", "rack-z", false, "ubuntu", "noble", "amd64", "1"),
				img("r1", "rack-a", false, "ubuntu", "noble", "amd64", "1"),
			},
			keys: noKeys,
			want: []Entry{{OS: "ubuntu", Release: "noble", Arch: "amd64", Subarch: "generic",
				Racks: []EntryRack{
					{ID: "r1", Name: "rack-a", Versions: []VersionBrief{{ID: "ubuntu/noble/amd64/1", Version: "1"}}},
					{ID: "r2", Name: "rack-z", Versions: []VersionBrief{{ID: "ubuntu/noble/amd64/1", Version: "1"}}}}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := group(tc.imgs, tc.keys); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("group:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestGroupOrder: entries come sorted by os, release, arch, whatever the
// order of the rows, and a licence key marks its os/release only.
func TestGroupOrder(t *testing.T) {
	imgs := []postgres.ImageOnRack{
		img("r1", "rack", true, "windows", "2022", "amd64", "1"),
		img("r1", "rack", true, "ubuntu", "noble", "arm64", "1"),
		img("r1", "rack", true, "ubuntu", "jammy", "amd64", "1"),
		img("r1", "rack", true, "ubuntu", "noble", "amd64", "1"),
	}
	keys := map[[2]string]postgres.LicenceKey{{"windows", "2022"}: {}}
	var got []string
	for _, e := range group(imgs, keys) {
		got = append(got, fmt.Sprintf("%s/%s/%s key=%v", e.OS, e.Release, e.Arch, e.LicenceKeySet))
	}
	want := []string{"ubuntu/jammy/amd64 key=false", "ubuntu/noble/amd64 key=false", "ubuntu/noble/arm64 key=false", "windows/2022/amd64 key=true"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("group order:\n got %q\nwant %q", got, want)
	}
}

func TestFilter(t *testing.T) {
	all := []postgres.ImageOnRack{
		img("r1", "a", true, "ubuntu", "noble", "amd64", "1"),
		img("r1", "a", true, "ubuntu", "jammy", "arm64", "1"),
		img("r1", "a", true, "centos", "9", "amd64", "1"),
	}
	for _, tc := range []struct {
		name string
		f    postgres.ImageFilter
		want []int
	}{
		{"no filter keeps all", postgres.ImageFilter{}, []int{0, 1, 2}},
		{"by os", postgres.ImageFilter{OS: "ubuntu"}, []int{0, 1}},
		{"by release", postgres.ImageFilter{Release: "jammy"}, []int{1}},
		{"by arch", postgres.ImageFilter{Arch: "amd64"}, []int{0, 2}},
		{"all three", postgres.ImageFilter{OS: "ubuntu", Release: "noble", Arch: "amd64"}, []int{0}},
		{"nothing matches", postgres.ImageFilter{OS: "windows"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []postgres.ImageOnRack
			for _, i := range tc.want {
				want = append(want, all[i])
			}
			if got := filter(all, tc.f); !reflect.DeepEqual(got, want) {
				t.Errorf("filter(%+v) = %+v, want %+v", tc.f, got, want)
			}
		})
	}
}

func TestDiverged(t *testing.T) {
	for _, tc := range []struct {
		name           string
		reported, live string
		known, want    bool
	}{
		{"same digest", "sha256:a", "sha256:a", true, false},
		{"other digest", "sha256:a", "sha256:b", true, true},
		{"never reported: nothing to diverge from", "", "sha256:b", false, false},
		{"reported empty, live not", "", "sha256:b", true, true},
	} {
		if got := diverged(tc.reported, tc.known, tc.live); got != tc.want {
			t.Errorf("%s: diverged(%q, %v, %q) = %v, want %v", tc.name, tc.reported, tc.known, tc.live, got, tc.want)
		}
	}
}

func TestImagesOf(t *testing.T) {
	c := events.Capabilities{OSes: []events.OS{{Name: "ubuntu", Title: "Ubuntu", Releases: []events.Release{
		{Name: "noble", Title: "24.04", Default: true, CanCommission: true, Arches: []events.Arch{
			{Arch: "amd64", Subarch: "generic", Versions: []events.ImageVersion{{ID: "v1", Label: "stable", Version: "20240101"}, {ID: "v2"}}},
		}},
		{Name: "jammy", RequiresLicenceKey: true},
	}}}}
	want := []postgres.ImageOnRack{
		{RackID: "r1", RackName: "rack", Online: true, OS: "ubuntu", OSTitle: "Ubuntu", Release: "noble", ReleaseTitle: "24.04",
			Default: true, CanCommission: true, Arch: "amd64", Subarch: "generic", VersionID: "v1", Label: "stable", Version: "20240101", Installer: "custom"},
		{RackID: "r1", RackName: "rack", Online: true, OS: "ubuntu", OSTitle: "Ubuntu", Release: "noble", ReleaseTitle: "24.04",
			Default: true, CanCommission: true, Arch: "amd64", Subarch: "generic", VersionID: "v2", Installer: "custom"},
	}
	if got := imagesOf("r1", "rack", c); !reflect.DeepEqual(got, want) {
		t.Errorf("imagesOf:\n got %+v\nwant %+v", got, want)
	}
}

func TestOnlineRacks(t *testing.T) {
	imgs := []postgres.ImageOnRack{
		img("r2", "b", true, "w", "1", "amd64", "1"), img("r1", "a", false, "w", "1", "amd64", "1"),
		img("r2", "b", true, "w", "1", "amd64", "2"), img("r3", "c", true, "w", "1", "amd64", "1"),
	}
	if got, want := onlineRacks(imgs), []string{"r2", "r3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("onlineRacks = %v, want %v", got, want)
	}
}

func TestMask(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"ABCDE-FGHIJ-KLMNO", "*****-*****-*LMNO"},
		{"abcd", "abcd"},
		{"ab-cd-ef", "**-cd-ef"},
		{"", ""},
		{"----", "----"},
		{"12345", "*2345"},
	} {
		if got := Mask(tc.key); got != tc.want {
			t.Errorf("Mask(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
