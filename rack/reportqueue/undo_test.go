package reportqueue

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/rackplane/rackplane"
)

// failingFile is the queue's file on a disk that fails: a write puts half
// its bytes down and fails, and a truncate fails when truncateFails.
type failingFile struct {
	*os.File
	failWrites    bool
	truncateFails bool
}

func (f *failingFile) WriteAt(b []byte, off int64) (int, error) {
	if !f.failWrites {
		return f.File.WriteAt(b, off)
	}
	n, _ := f.File.WriteAt(b[:len(b)/2], off)
	return n, errors.New("no space left on device")
}

func (f *failingFile) Truncate(size int64) error {
	if f.truncateFails {
		return errors.New("input/output error")
	}
	return f.File.Truncate(size)
}

// TestFailedAppendIsUndone: an append whose write fails leaves no partial
// record for later appends to follow; when the partial record cannot be
// cut off, the queue refuses appends (installers retry) rather than
// acknowledging calls the next start would cut off with it.
func TestFailedAppendIsUndone(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		name          string
		truncateFails bool
		want          []string
	}{
		{"cut off", false, []string{"1", "3"}},
		{"cannot be cut off", true, []string{"1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q, err := Open(Config{DataDir: dir}, nil, log, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Append("install_status", "m", "1"); err != nil {
				t.Fatal(err)
			}
			ff := &failingFile{File: q.f.(*os.File), failWrites: true, truncateFails: tt.truncateFails}
			q.f = ff
			if err := q.Append("install_status", "m", "2"); rackplane.ErrorCode(err) != rackplane.EUNAVAILABLE {
				t.Fatalf("append on a failing disk: %v", err)
			}
			ff.failWrites = false
			err = q.Append("install_status", "m", "3")
			if tt.truncateFails {
				if rackplane.ErrorCode(err) != rackplane.EUNAVAILABLE {
					t.Fatalf("append after a write that could not be undone: %v, want unavailable", err)
				}
			} else if err != nil {
				t.Fatalf("append after an undone write: %v", err)
			}
			q.Close()
			ff.File.Close()

			// What was acknowledged is what a restart finds.
			q, err = Open(Config{DataDir: dir}, nil, log, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			var got []string
			for _, c := range q.Calls() {
				got = append(got, string(c.Request))
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, `"`+w+`"`)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after a restart the queue holds %q, want %q", got, want)
			}
		})
	}
}
