package images

import (
	"context"
	"log/slog"
	"os"
	"testing"
)

// BenchmarkImportHTTP measures import throughput (download, sha256,
// fsync, rename) from a loopback HTTP source; -benchtime sets how often a
// fresh store imports the same 64 MiB version.
func BenchmarkImportHTTP(b *testing.B) {
	const size = 64 << 20
	v, files := imageVersion("20261101", map[string][]byte{"squashfs": content("bench", size), "linux": content("k", 8<<20)})
	ss := newSourceServer(b, v)
	ss.addFiles(files)
	b.SetBytes(size + 8<<20)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler); c.Publisher = nil })
		b.StartTimer()
		if _, err := e.s.Import(context.Background(), Source{URL: ss.url()}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		e.s.Close()
		os.RemoveAll(e.dir)
		b.StartTimer()
	}
}

// BenchmarkOpenFile measures the hand-off's cost of resolving a versioned
// path and opening its blob.
func BenchmarkOpenFile(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 1000)})
	ss := newSourceServer(b, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	p := v.ID() + "/linux"
	for b.Loop() {
		f, err := e.s.OpenFile(context.Background(), p)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
