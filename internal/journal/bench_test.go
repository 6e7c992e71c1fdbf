package journal_test

import (
	"fmt"
	"testing"
)

// BenchmarkAppend measures journal throughput in fsync'd groups of
// several sizes, for records the size of a typical event (~600 bytes).
func BenchmarkAppend(b *testing.B) {
	rec := make([]byte, 600)
	for _, group := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			j := open(b, b.TempDir(), 1<<40, 0)
			batch := make([][]byte, group)
			for i := range batch {
				batch[i] = rec
			}
			b.ResetTimer()
			for done := 0; done < b.N; done += group {
				if _, err := j.Append(batch[:min(group, b.N-done)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
