package images

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = reg })
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 1234)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	f, err := e.s.OpenFile(context.Background(), v.ID()+"/linux")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := map[string]float64{
		"rackplane_images_import_bytes_total":     1234,
		"rackplane_images_files_handed_out_total": 1,
		"rackplane_images_versions":               1,
		"rackplane_images_stored_bytes":           1234,
		"rackplane_images_unusable_versions":      0,
		"rackplane_images_imports_total":          1,
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				got[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[mf.GetName()] += m.GetGauge().GetValue()
			}
		}
	}
	for name, w := range want {
		if v, ok := got[name]; !ok || v != w {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, w)
		}
	}
}
