package ephemeral

import (
	"strings"
	"testing"
)

func TestLoadOrder(t *testing.T) {
	mods := map[string]module{}
	for _, m := range []module{
		{name: "nvme", depends: []string{"nvme_core"}},
		{name: "nvme_core", depends: []string{"t10_pi"}},
		{name: "t10_pi", depends: []string{"crc_t10dif"}, soft: []string{"absent"}},
		{name: "crc_t10dif", soft: []string{"crct10dif_generic"}},
		{name: "crct10dif_generic"},
		{name: "ahci", depends: []string{"libahci", "libata"}},
		{name: "libahci", depends: []string{"libata"}},
		{name: "libata"},
		{name: "ipmi_si", depends: []string{"ipmi_msghandler"}},
		{name: "ipmi_devintf", depends: []string{"ipmi_msghandler"}},
		{name: "ipmi_msghandler", post: []string{"ipmi_devintf", "absent"}},
	} {
		mods[m.name] = m
	}
	got, err := loadOrder(mods, map[string]bool{"virtio_pci": true}, []string{"nvme", "ahci", "virtio-pci", "libata", "ipmi_si"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.name)
	}
	want := "libata libahci ahci ipmi_msghandler ipmi_devintf ipmi_si crct10dif_generic crc_t10dif t10_pi nvme_core nvme"
	if strings.Join(names, " ") != want {
		t.Fatalf("order %v, want %s", names, want)
	}
	// A post dependency that is a root itself, visited first.
	got, err = loadOrder(mods, nil, []string{"ipmi_si", "ipmi_devintf"})
	if err != nil {
		t.Fatal(err)
	}
	names = names[:0]
	for _, m := range got {
		names = append(names, m.name)
	}
	if want := "ipmi_msghandler ipmi_devintf ipmi_si"; strings.Join(names, " ") != want {
		t.Fatalf("order %v, want %s", names, want)
	}
	if _, err := loadOrder(mods, nil, []string{"virtio_pci"}); err == nil {
		t.Fatal("a module neither built in nor in the package was accepted")
	}
	mods["libata"] = module{name: "libata", depends: []string{"ahci"}}
	if _, err := loadOrder(mods, nil, []string{"ahci"}); err == nil {
		t.Fatal("a dependency cycle was accepted")
	}
}
