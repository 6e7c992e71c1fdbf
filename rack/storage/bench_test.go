package storage

import (
	"fmt"
	"strings"
	"testing"
)

func BenchmarkParseParameters(b *testing.B) {
	var sb strings.Builder
	for i := range 64 {
		fmt.Fprintf(&sb, "param_%d\tDescription of parameter number %d\n", i, i)
	}
	in := []byte(sb.String())
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseParameters(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAttachOutput(b *testing.B) {
	in := []byte("/dev/rbd0\nrbd:pool/vol\nkvm+nbd://10.0.0.1:10809/vol\n")
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAttachOutput(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScanProviders(b *testing.B) {
	dir := b.TempDir()
	for i := range 16 {
		writeProvider(b, fmt.Sprintf("%s/p%02d", dir, i), "a one\nb two\n", nil)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ps, _ := ScanProviders([]string{dir}); len(ps) != 16 {
			b.Fatal(len(ps))
		}
	}
}
