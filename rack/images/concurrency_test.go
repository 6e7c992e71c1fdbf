package images

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/rackplane/rackplane"
	"time"
)

// TestGCDuringImportsKeepsEveryVersionWhole runs GC in a loop while several
// sources sharing files import at once: pinned blobs must survive, and
// every version that becomes visible must have all its files.
func TestGCDuringImportsKeepsEveryVersionWhole(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepNewest = 100 })
	shared := content("shared", 64<<10)
	var servers []*sourceServer
	for i := range 4 {
		v, files := imageVersion(fmt.Sprintf("2026110%d", i), map[string][]byte{"linux": shared, "initrd": content(fmt.Sprint(i), 32<<10)})
		v.Label = fmt.Sprintf("l%d", i)
		ss := newSourceServer(t, v)
		ss.addFiles(files)
		servers = append(servers, ss)
	}
	stop := make(chan struct{})
	var gcs sync.WaitGroup
	gcs.Add(1)
	go func() {
		defer gcs.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.s.GC(context.Background(), false); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var imports sync.WaitGroup
	for _, ss := range servers {
		imports.Add(1)
		go func() {
			defer imports.Done()
			if _, err := e.s.Import(context.Background(), Source{URL: ss.url()}); err != nil {
				t.Error(err)
			}
		}()
	}
	imports.Wait()
	close(stop)
	gcs.Wait()
	vs := e.s.Versions()
	if len(vs) != 4 {
		t.Fatalf("%d versions", len(vs))
	}
	for _, v := range vs {
		if !v.Usable {
			t.Fatalf("%s unusable: %s", v.ID, v.Problem)
		}
		f, err := e.s.OpenFile(context.Background(), v.ID+"/linux")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, f), shared) {
			t.Fatalf("%s: wrong kernel", v.ID)
		}
		f.Close()
	}
}

func TestCloseStopsBackgroundImports(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 1000)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	started := make(chan struct{}, 1)
	ss.with(func() {
		ss.fileHook = func(w http.ResponseWriter, r *http.Request, p string) bool {
			w.Header().Set("Content-Length", "1000")
			w.Write(content("k", 1000)[:10])
			w.(http.Flusher).Flush()
			started <- struct{}{}
			<-r.Context().Done()
			return true
		}
	})
	st, err := e.s.StartImport(Source{URL: ss.url()})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	final := e.s.Imports()[0]
	if final.ID != st.ID || final.State != ImportFailed || final.Code != rackplane.EUNAVAILABLE {
		t.Fatalf("import after close: %+v", final)
	}
	if f := e.files("tmp"); len(f) != 0 {
		t.Fatalf("temp files left: %v", f)
	}
	if _, err := e.s.StartImport(Source{URL: ss.url()}); err == nil {
		t.Fatal("import started on a closed store")
	}
}
