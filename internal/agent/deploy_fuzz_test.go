package agent

import (
	"strings"
	"testing"
)

// FuzzParseDeployTask: whatever a rack (or something posing as one)
// answers, the task parser never panics, and a task it takes holds
// nothing that could leave its place: no line breaks in what goes into
// the seed file, an http(s) image URL.
func FuzzParseDeployTask(f *testing.F) {
	f.Add([]byte(`{"image_url":"http://10.0.0.1:5248/u/amd64/generic/noble/stable/1/disk.img.zst","file":{"name":"disk.img.zst","sha256":"` +
		strings.Repeat("a", 64) + `","size":10},"disk":{"file":"disk.img.zst","compression":"zstd","size":100,"sha256":"` +
		strings.Repeat("b", 64) + `","table":"msdos","root_partition":2,"grow_root":true},"target_disk":"vda",` +
		`"metadata_url":"http://10.0.0.1:5248/metadata/m/c/","instance_id":"0190f0e0-0000-7000-8000-00000000d0d0","hostname":"node1"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"target_disk":"/dev/disk/by-id/virtio-abc"} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		task, err := ParseDeployTask(b)
		if err != nil {
			return
		}
		for _, v := range []string{task.InstanceID, task.Hostname, task.MetadataURL, task.TargetDisk} {
			if strings.ContainsAny(v, "\n\r\x00 ") {
				t.Fatalf("taken task holds a line break or space: %q", v)
			}
		}
		if !strings.HasPrefix(task.ImageURL, "http://") && !strings.HasPrefix(task.ImageURL, "https://") {
			t.Fatalf("taken image URL %q", task.ImageURL)
		}
	})
}
