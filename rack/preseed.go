package rack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
)

// servePreseed proxies an installer's preseed request to the region, which
// renders the version the machine's deployment pinned. Machines talk only
// to their rack; the rack talks to the region over NATS.
func (r *Rack) servePreseed(w http.ResponseWriter, req *http.Request) {
	id, err := uuid.Parse(req.PathValue("machine"))
	if err != nil {
		http.Error(w, "not a machine id", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	var out struct {
		Name    string `json:"name"`
		Version int64  `json:"version"`
		Content string `json:"content"`
	}
	err = rpc.Call(ctx, r.nc, events.RegionRPCSubject(events.MethodPreseed),
		map[string]string{"rack_id": r.id, "machine_id": id.String(), "remote": req.RemoteAddr}, &out)
	if err != nil {
		r.log.Warn("preseed not served", "machine_id", id, "remote", req.RemoteAddr, "err", err)
		http.Error(w, rackplane.ErrorMessage(err), httpStatus(err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Rackplane-Preseed", fmt.Sprintf("%s@%d", out.Name, out.Version))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(out.Content))
}

// maxStatusBody bounds an installer's report; its message is cut to what
// the region keeps.
const maxStatusBody = 16 << 10

// serveStatus passes an installer's report of its outcome to the region:
// POST /status/<machine>/<token> with result=success|failure and an
// optional message, as a form (curl --data, busybox wget --post-data) or
// as JSON.
func (r *Rack) serveStatus(w http.ResponseWriter, req *http.Request) {
	id, err := uuid.Parse(req.PathValue("machine"))
	if err != nil {
		http.Error(w, "not a machine id", http.StatusNotFound)
		return
	}
	token := req.PathValue("token")
	if token == "" || len(token) > 128 {
		http.Error(w, "not a status token", http.StatusNotFound)
		return
	}
	report, err := parseReport(req.Header.Get("Content-Type"), http.MaxBytesReader(w, req.Body, maxStatusBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	var out struct {
		Status  string `json:"status"`
		Changed bool   `json:"changed"`
	}
	err = rpc.Call(ctx, r.nc, events.RegionRPCSubject(events.MethodInstallStatus), map[string]string{
		"rack_id": r.id, "machine_id": id.String(), "token": token,
		"result": report.Result, "message": report.Message, "remote": req.RemoteAddr,
	}, &out)
	if err != nil {
		r.log.Warn("install report not taken", "machine_id", id, "remote", req.RemoteAddr, "err", err)
		http.Error(w, rackplane.ErrorMessage(err), httpStatus(err))
		return
	}
	r.log.Info("install report taken", "machine_id", id, "result", report.Result, "status", out.Status, "changed", out.Changed)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "machine %s is %s\n", id, out.Status)
}

// httpStatus maps the region's answer to what an installer's HTTP client
// understands; installers retry on 503.
func httpStatus(err error) int {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND:
		return http.StatusNotFound
	case rackplane.EUNAVAILABLE, rackplane.ETIMEOUT:
		return http.StatusServiceUnavailable
	case rackplane.EINVALID:
		return http.StatusBadRequest
	case rackplane.EFORBIDDEN, rackplane.EUNAUTHORIZED:
		return http.StatusForbidden
	case rackplane.ECONFLICT:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// installReport is what an installer POSTs to /status.
type installReport struct {
	Result  string `json:"result"`
	Message string `json:"message"`
}

// parseReport reads an installer's report, a form or JSON, and checks it.
// The message is cut to what the region keeps rather than refused: an
// installer's last words are worth more than its length.
func parseReport(contentType string, body io.Reader) (installReport, error) {
	var rep installReport
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if mediaType == "application/json" {
		if err := json.NewDecoder(body).Decode(&rep); err != nil {
			return rep, fmt.Errorf("unreadable report: %w", err)
		}
	} else {
		b, err := io.ReadAll(body)
		if err != nil {
			return rep, fmt.Errorf("unreadable report: %w", err)
		}
		form, err := url.ParseQuery(string(b))
		if err != nil {
			return rep, fmt.Errorf("unreadable report: %w", err)
		}
		rep.Result, rep.Message = form.Get("result"), form.Get("message")
	}
	if rep.Result != "success" && rep.Result != "failure" {
		return rep, errors.New("result must be success or failure")
	}
	rep.Message = strings.ToValidUTF8(rep.Message, "\uFFFD")
	if len(rep.Message) > 1024 {
		rep.Message = strings.ToValidUTF8(rep.Message[:1024], "")
	}
	return rep, nil
}
