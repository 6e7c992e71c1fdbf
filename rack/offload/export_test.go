package offload

import "time"

// SetReportsIdle sets how often Completions looks whether it may stop
// listening, until the returned restore; call it before Completions.
func SetReportsIdle(d time.Duration) (restore func()) {
	old := reportsIdle
	reportsIdle = d
	return func() { reportsIdle = old }
}
