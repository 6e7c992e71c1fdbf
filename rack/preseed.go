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
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/preseedcache"
	"github.com/rackplane/rackplane/rack/reportqueue"
)

// servePreseed proxies an installer's preseed request to the region, which
// renders the version the machine's deployment pinned. Machines talk only
// to their rack; the rack talks to the region over NATS. When the region
// does not answer, the rack serves the copy it cached when the deployment
// started, and tells the region it did once it is back.
//
// The preseed holds the deployment's secrets, so it goes only to a request
// carrying the credential the rack put on the machine's kernel command
// line for the deployment in progress (package machinecred); anything else
// is refused before the region is asked.
func (r *Rack) servePreseed(w http.ResponseWriter, req *http.Request) {
	id, err := uuid.Parse(req.PathValue("machine"))
	if err != nil {
		http.Error(w, "not a machine id", http.StatusNotFound)
		return
	}
	d, ok := r.decisions.Deployment(id.String())
	credential := req.PathValue("credential")
	// One answer for every refusal: which machines deploy here is
	// nobody's business on the boot network. The metric and the log say
	// which it was.
	const refused = "a preseed is served only to its machine's installer during the deployment, at the URL on its kernel command line"
	switch {
	case credential == "":
		r.refuseMachine(w, req, "preseed", "no_credential", id.String(), http.StatusForbidden, refused)
		return
	case !ok:
		r.refuseMachine(w, req, "preseed", "not_deploying", id.String(), http.StatusForbidden, refused)
		return
	case !r.creds.Check(id.String(), d.DeploymentID, credential):
		r.refuseMachine(w, req, "preseed", "wrong_credential", id.String(), http.StatusForbidden, refused)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	ask := events.PreseedRequest{RackID: r.id, MachineID: id.String(), DeploymentID: d.DeploymentID,
		URL: bootconfig.PreseedURL(d, r.creds.For), Remote: req.RemoteAddr}
	out, err := r.askPreseed(ctx, ask)
	source := "region"
	switch {
	case err == nil:
		if err := r.preseeds.Refresh(cachedPreseed(id.String(), out)); err != nil {
			r.log.Error("preseed not cached", "machine_id", id, "err", err)
		}
	case reportqueue.Permanent(err):
		// The region serves this machine no preseed (any more): the
		// deployment ended before this rack heard of it. Answered like
		// the rack's own refusals, so that the answer does not depend
		// on which of the two knew first; the log keeps the region's
		// reason.
		r.preseeds.Forget(id.String())
		r.log.Warn("preseed not served", "machine_id", id, "remote", req.RemoteAddr, "err", err)
		r.refuseMachine(w, req, "preseed", "region_refused", id.String(), http.StatusForbidden, refused)
		return
	default:
		cached, cerr := r.deploying(id.String())
		if cerr != nil {
			r.log.Warn("preseed not served: region away and none cached", "machine_id", id, "remote", req.RemoteAddr, "err", err, "cache", cerr)
			http.Error(w, rackplane.ErrorMessage(err), httpStatus(err))
			return
		}
		out = events.PreseedReply{Name: cached.Name, Version: cached.Version, Content: cached.Content}
		source = "cache"
		// The region records the fetch when it is back, before the
		// installer's report that follows it in the queue: once per
		// deployment, however often it is fetched (by whomever).
		if r.firstCachedFetch(id.String(), cached.Decision) {
			if qerr := r.reports.Append(events.MethodPreseed, id.String(), ask); qerr != nil {
				r.log.Warn("preseed fetch not queued for the region", "machine_id", id, "err", qerr)
				r.forgetCachedFetch(id.String())
			}
		}
		r.log.Info("preseed served from the rack's cache: region away", "machine_id", id, "remote", req.RemoteAddr,
			"preseed", cached.Name, "version", cached.Version, "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Rackplane-Preseed", fmt.Sprintf("%s@%d", out.Name, out.Version))
	w.Header().Set("X-Rackplane-Preseed-Source", source)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(out.Content))
}

// refuseMachinePath answers a path under an installer's endpoint that no
// installer asks, such as more elements after a credential or a token.
// It must not fall through to the boot file server, whose telemetry
// records the path: the credential or token in it would reach the event
// log.
func (r *Rack) refuseMachinePath(w http.ResponseWriter, req *http.Request) {
	endpoint, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
	r.machineRefused.WithLabelValues(endpoint, "bad_path").Inc()
	r.log.Warn("machine request refused", "endpoint", endpoint, "reason", "bad_path", "remote", req.RemoteAddr)
	http.Error(w, "no such path", http.StatusNotFound)
}

// refuseMachine answers a machine-facing request the rack will not serve,
// counts it and logs who asked; the credential itself is never logged.
func (r *Rack) refuseMachine(w http.ResponseWriter, req *http.Request, endpoint, reason, machineID string, status int, msg string) {
	r.machineRefused.WithLabelValues(endpoint, reason).Inc()
	r.log.Warn("machine request refused", "endpoint", endpoint, "reason", reason, "machine_id", machineID, "remote", req.RemoteAddr)
	http.Error(w, msg, status)
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
		if errors.Is(err, os.ErrDeadlineExceeded) {
			http.Error(w, "report not received within the read timeout", http.StatusRequestTimeout)
			return
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	call := events.InstallStatusRequest{RackID: r.id, MachineID: id.String(), Token: token,
		Result: report.Result, Message: report.Message, Remote: req.RemoteAddr}
	// Reports still queued go first: the region must see them in the
	// order they were made.
	if r.reports.Pending() == 0 {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		var out events.InstallStatusReply
		err = r.callRegion(ctx, events.MethodInstallStatus, call, &out)
		if err == nil {
			r.log.Info("install report taken", "machine_id", id, "result", report.Result, "status", out.Status, "changed", out.Changed)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "machine %s is %s\n", id, out.Status)
			return
		}
		if reportqueue.Permanent(err) {
			r.log.Warn("install report not taken", "machine_id", id, "remote", req.RemoteAddr, "err", err)
			http.Error(w, rackplane.ErrorMessage(err), httpStatus(err))
			return
		}
	}
	// Anyone on the boot network can post here, and the region cannot
	// check the token now: keep only reports of machines deploying from
	// this rack, with their deployment's token, lest the queue fill with
	// junk and real installers be turned away.
	cached, err := r.deploying(id.String())
	if err != nil {
		r.reportsRefused.WithLabelValues("not_deploying").Inc()
		r.log.Warn("install report not queued: region away and no deployment of the machine known here", "machine_id", id, "remote", req.RemoteAddr, "err", err)
		http.Error(w, "the region is away and this rack knows no deployment of this machine; try again later", http.StatusServiceUnavailable)
		return
	}
	if !cached.TokenMatches(token) {
		r.reportsRefused.WithLabelValues("wrong_token").Inc()
		r.log.Warn("install report refused: wrong token", "machine_id", id, "remote", req.RemoteAddr)
		http.Error(w, "this token is not the one of the machine's current deployment", http.StatusForbidden)
		return
	}
	// The installer is about to power off: once answered, the report must
	// outlive the region's absence and a restart of the rack.
	if err := r.reports.Append(events.MethodInstallStatus, id.String(), call); err != nil {
		r.log.Error("install report not queued", "machine_id", id, "remote", req.RemoteAddr, "err", err)
		http.Error(w, rackplane.ErrorMessage(err), httpStatus(err))
		return
	}
	r.log.Info("install report queued: region away", "machine_id", id, "result", report.Result, "pending", r.reports.Pending())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "report of machine %s accepted: the region is away; the rack stored it and will deliver it when the region is back\n", id)
}

// deploying returns the cached preseed of machineID's current deployment
// on this rack: an entry fetched under another (an earlier deployment's)
// is not it.
func (r *Rack) deploying(machineID string) (preseedcache.Preseed, error) {
	key := r.preseeds.Current(machineID)
	if key == "" {
		return preseedcache.Preseed{}, rackplane.Errorf(rackplane.ENOTFOUND, "machine %s is not deploying from this rack", machineID)
	}
	cached, err := r.preseedStore.Get(machineID)
	if err != nil {
		return cached, err
	}
	if cached.Decision != key {
		return preseedcache.Preseed{}, rackplane.Errorf(rackplane.ENOTFOUND, "the cached preseed of machine %s is of an earlier deployment", machineID)
	}
	return cached, nil
}

// firstCachedFetch reports whether the cached preseed of machineID's
// deployment key is served for the first time, and notes it.
func (r *Rack) firstCachedFetch(machineID, key string) bool {
	r.fetchesMu.Lock()
	defer r.fetchesMu.Unlock()
	if r.fetchesQueued[machineID] == key {
		return false
	}
	r.fetchesQueued[machineID] = key
	return true
}

func (r *Rack) forgetCachedFetch(machineID string) {
	r.fetchesMu.Lock()
	defer r.fetchesMu.Unlock()
	delete(r.fetchesQueued, machineID)
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
	// Text the region can keep: UTF-8, and no NUL (PostgreSQL refuses it
	// in JSON, and a report it refuses would be queued for ever).
	rep.Message = strings.ReplaceAll(strings.ToValidUTF8(rep.Message, "\uFFFD"), "\x00", "\uFFFD")
	if len(rep.Message) > 1024 {
		rep.Message = strings.ToValidUTF8(rep.Message[:1024], "")
	}
	return rep, nil
}
