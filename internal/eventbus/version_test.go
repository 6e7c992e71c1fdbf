package eventbus

import "testing"

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{"2.10.0", true},
		{"2.10.22", true},
		{"2.11.0-RC.1", true},
		{"v2.12.3", true},
		{"3.0.0", true},
		{"2.9.10", false},
		{"2.9.99", false},
		{"2.10.0-beta.3", true},
		{"1.99.99", false},
		{"", false},
		{"2.10", false},
		{"two.ten.zero", false},
	}
	for _, tt := range tests {
		if got := versionAtLeast(tt.version, MinServerVersion); got != tt.want {
			t.Errorf("versionAtLeast(%q, %q) = %v, want %v", tt.version, MinServerVersion, got, tt.want)
		}
	}
}
