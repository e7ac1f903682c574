package sandboxsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// maxRequest bounds a JSON request's body.
const maxRequest = 1 << 20

// Handler serves the API (docs/sandbox-service.md):
//
//	POST   /v1/sandboxes                  make one
//	GET    /v1/sandboxes                  list them
//	GET    /v1/sandboxes/{id}             one
//	DELETE /v1/sandboxes/{id}             remove one
//	POST   /v1/sandboxes/{id}/timeout     end it N seconds from now
//	POST   /v1/sandboxes/{id}/pause       freeze it, memory and all
//	POST   /v1/sandboxes/{id}/resume      thaw it (timeout_seconds: its new life)
//	GET    /v1/sandboxes/{id}/metrics     its CPU, memory and processes now
//	GET    /v1/events[?sandbox=ID&replay=true]  sandboxes' lives as they happen (NDJSON)
//	PUT    /v1/sandboxes/{id}/network     replace its allow_out and deny_out
//	POST   /v1/sandboxes/{id}/commands    run a command (or start one in the background)
//	GET    /v1/sandboxes/{id}/commands    the background commands
//	GET    /v1/sandboxes/{id}/commands/{cid}  one, with its output's tail
//	DELETE /v1/sandboxes/{id}/commands/{cid}  kill it (if it runs) and forget it
//	GET    /v1/sandboxes/{id}/commands/{cid}/events  its output as it comes, then its end (NDJSON)
//	POST   /v1/sandboxes/{id}/commands/{cid}/stdin  send it input (stdin_open, pty)
//	POST   /v1/sandboxes/{id}/commands/{cid}/resize its terminal's new size (pty)
//	DELETE /v1/sandboxes/{id}/commands/{cid}/stdin  close its input
//	GET    /v1/sandboxes/{id}/files?path= read a file (&format=tar: a directory)
//	       &format=stat: its details; &format=list: a directory's entries
//	PUT    /v1/sandboxes/{id}/files?path= write a file (&format=tar: unpack into a directory;
//	       &format=dir: make a directory)
//	DELETE /v1/sandboxes/{id}/files?path= remove a file or directory
//	GET    /v1/sandboxes/{id}/files/watch?path= what changes below a directory, as it comes
//	POST   /v1/sandboxes/{id}/files/move  move one (from, to)
//	POST   /v1/sandboxes/{id}/snapshots   keep its files as a snapshot
//	GET    /v1/snapshots                  list the snapshots
//	DELETE /v1/snapshots/{name}           remove one
//	ANY    /v1/sandboxes/{id}/ports/{port}/PATH  sent on to the sandbox's server on that port
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		var req CreateRequest
		if !decode(w, r, &req) {
			return
		}
		sb, err := s.Create(r.Context(), req)
		reply(w, http.StatusCreated, sb, err)
	})
	mux.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		l, err := s.List(r.Context())
		// ?state=S (again for more): those in one of them (running,
		// paused, ...); ?metadata.KEY=VALUE...: those whose metadata has
		// them all.
		if states, ok := r.URL.Query()["state"]; ok {
			l = slices.DeleteFunc(l, func(sb Sandbox) bool { return !slices.Contains(states, sb.State) })
		}
		for k, vs := range r.URL.Query() {
			if key, ok := strings.CutPrefix(k, "metadata."); ok {
				l = slices.DeleteFunc(l, func(sb Sandbox) bool {
					v, has := sb.Metadata[key]
					return !has || !slices.Contains(vs, v)
				})
			}
		}
		reply(w, http.StatusOK, l, err)
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		sb, err := s.Get(r.PathValue("id"))
		reply(w, http.StatusOK, sb, err)
	})
	mux.HandleFunc("DELETE /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := s.Remove(r.Context(), r.PathValue("id"))
		reply(w, http.StatusNoContent, nil, err)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/timeout", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			TimeoutSeconds int `json:"timeout_seconds"`
		}
		if !decode(w, r, &req) {
			return
		}
		sb, err := s.SetTimeout(r.Context(), r.PathValue("id"), req.TimeoutSeconds)
		reply(w, http.StatusOK, sb, err)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/pause", func(w http.ResponseWriter, r *http.Request) {
		sb, err := s.Pause(r.Context(), r.PathValue("id"))
		reply(w, http.StatusOK, sb, err)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if id := q.Get("sandbox"); id != "" {
			if _, err := s.Get(id); err != nil || !s.owns(tenantOf(r.Context()), id) {
				reply(w, 0, nil, fmt.Errorf("%w: %s", errNotFound, id))
				return
			}
		}
		streamEvents(w, func(send func(LifecycleEvent) error, ready func()) error {
			return s.FollowLifecycle(r.Context(), q.Get("sandbox"), q.Get("replay") == "true", send, ready)
		})
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}/metrics", func(w http.ResponseWriter, r *http.Request) {
		m, err := s.Metrics(r.Context(), r.PathValue("id"))
		reply(w, http.StatusOK, m, err)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			TimeoutSeconds int `json:"timeout_seconds"`
		}
		if r.ContentLength != 0 && !decode(w, r, &req) {
			return
		}
		sb, err := s.Resume(r.Context(), r.PathValue("id"), req.TimeoutSeconds)
		reply(w, http.StatusOK, sb, err)
	})
	mux.HandleFunc("PUT /v1/sandboxes/{id}/network", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			AllowOut []string `json:"allow_out"`
			DenyOut  []string `json:"deny_out"`
		}
		if !decode(w, r, &req) {
			return
		}
		sb, err := s.SetEgress(r.Context(), r.PathValue("id"), req.AllowOut, req.DenyOut)
		reply(w, http.StatusOK, sb, err)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/snapshots", func(w http.ResponseWriter, r *http.Request) {
		var req SnapshotRequest
		if !decode(w, r, &req) {
			return
		}
		snap, err := s.TakeSnapshot(r.Context(), r.PathValue("id"), req)
		reply(w, http.StatusCreated, snap, err)
	})
	mux.HandleFunc("GET /v1/snapshots", func(w http.ResponseWriter, r *http.Request) {
		l, err := s.Snapshots(r.Context())
		reply(w, http.StatusOK, l, err)
	})
	mux.HandleFunc("DELETE /v1/snapshots/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNoContent, nil, s.RemoveSnapshot(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/commands", s.serveCommand)
	mux.HandleFunc("GET /v1/sandboxes/{id}/commands", func(w http.ResponseWriter, r *http.Request) {
		l, err := s.Backgrounds(r.PathValue("id"))
		reply(w, http.StatusOK, l, err)
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}/commands/{cid}", func(w http.ResponseWriter, r *http.Request) {
		b, err := s.Command(r.PathValue("id"), r.PathValue("cid"))
		reply(w, http.StatusOK, b, err)
	})
	mux.HandleFunc("DELETE /v1/sandboxes/{id}/commands/{cid}", func(w http.ResponseWriter, r *http.Request) {
		err := s.Kill(r.Context(), r.PathValue("id"), r.PathValue("cid"))
		reply(w, http.StatusNoContent, nil, err)
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}/commands/{cid}/events", func(w http.ResponseWriter, r *http.Request) {
		replay := r.URL.Query().Get("replay") == "true"
		streamEvents(w, func(send func(Event) error, ready func()) error {
			return s.Follow(r.Context(), r.PathValue("id"), r.PathValue("cid"), replay, send, ready)
		})
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/commands/{cid}/resize", func(w http.ResponseWriter, r *http.Request) {
		var size TermSize
		if !decode(w, r, &size) {
			return
		}
		reply(w, http.StatusNoContent, nil, s.Resize(r.PathValue("id"), r.PathValue("cid"), size))
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/commands/{cid}/stdin", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err != nil {
			reply(w, 0, nil, badRequest{fmt.Sprintf("input: %v (at most %d bytes a request)", err, maxRequest)})
			return
		}
		reply(w, http.StatusNoContent, nil, s.SendStdin(r.PathValue("id"), r.PathValue("cid"), b))
	})
	mux.HandleFunc("DELETE /v1/sandboxes/{id}/commands/{cid}/stdin", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNoContent, nil, s.CloseStdin(r.PathValue("id"), r.PathValue("cid")))
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		id, p := r.PathValue("id"), r.URL.Query().Get("path")
		switch format := r.URL.Query().Get("format"); format {
		case "stat":
			fi, err := s.Stat(r.Context(), id, p)
			reply(w, http.StatusOK, fi, err)
			return
		case "list":
			l, err := s.ListDir(r.Context(), id, p)
			reply(w, http.StatusOK, l, err)
			return
		case "", "tar":
		default:
			reply(w, 0, nil, badRequest{fmt.Sprintf("format=%s: want tar, stat or list (none: the file's bytes)", format)})
			return
		}
		archive := r.URL.Query().Get("format") == "tar"
		b, err := s.ReadFile(r.Context(), id, p, archive)
		if err != nil {
			reply(w, 0, nil, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if archive {
			w.Header().Set("Content-Type", "application/x-tar")
		}
		w.Write(b)
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}/files/watch", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		recursive := false
		switch v := q.Get("recursive"); v {
		case "", "false":
		case "true":
			recursive = true
		default:
			reply(w, 0, nil, badRequest{fmt.Sprintf("recursive=%s: want true or false", v)})
			return
		}
		streamEvents(w, func(send func(FileEvent) error, ready func()) error {
			return s.Watch(r.Context(), r.PathValue("id"), q.Get("path"), recursive, send, ready)
		})
	})
	mux.HandleFunc("DELETE /v1/sandboxes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		err := s.RemoveFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
		reply(w, http.StatusNoContent, nil, err)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/files/move", func(w http.ResponseWriter, r *http.Request) {
		var req MoveRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, http.StatusNoContent, nil, s.MoveFile(r.Context(), r.PathValue("id"), req))
	})
	mux.HandleFunc("PUT /v1/sandboxes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		switch format := r.URL.Query().Get("format"); format {
		case "dir":
			reply(w, http.StatusNoContent, nil, s.MakeDir(r.Context(), r.PathValue("id"), r.URL.Query().Get("path")))
			return
		case "", "tar":
		default:
			reply(w, 0, nil, badRequest{fmt.Sprintf("format=%s: want tar or dir (none: the body is the file's bytes)", format)})
			return
		}
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxFile))
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			reply(w, 0, nil, badRequest{fmt.Sprintf("file larger than %d bytes, the most this service takes", s.cfg.MaxFile)})
			return
		} else if err != nil {
			reply(w, 0, nil, badRequest{"file: " + err.Error()})
			return
		}
		err = s.WriteFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"), b, r.URL.Query().Get("format") == "tar")
		reply(w, http.StatusNoContent, nil, err)
	})
	mux.Handle("/v1/sandboxes/{id}/ports/{port}/{path...}", s.portProxy())
	return s.auth(mux)
}

// auth lets through requests that carry a token, if the service has
// any, each acting for its token's tenant, on that tenant's sandboxes
// only.
func (s *Service) auth(h http.Handler) http.Handler {
	if !s.hasTokens() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, ok := s.tenantOfRequest(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "this service wants your token: Authorization: Bearer TOKEN (or " + TokenHeader + ": TOKEN)"})
			return
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/sandboxes/"); ok {
			id, _, _ := strings.Cut(rest, "/")
			if !s.owns(t.Name, id) {
				reply(w, 0, nil, fmt.Errorf("%w: %s", errNotFound, id))
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(WithTenant(r.Context(), t.Name)))
	})
}

func (s *Service) serveCommand(w http.ResponseWriter, r *http.Request) {
	var req CommandRequest
	if !decode(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	if req.Background {
		b, err := s.Start(id, req)
		reply(w, http.StatusAccepted, b, err)
		return
	}
	if !req.Stream {
		res, err := s.Run(r.Context(), id, req)
		reply(w, http.StatusOK, res, err)
		return
	}
	streamEvents(w, func(send func(Event) error, _ func()) error { return s.Stream(r.Context(), id, req, send) })
}

// streamEvents replies with the events run sends, as NDJSON, each flushed
// as it comes. The stream's status is sent with its first event, or when
// run calls ready: what goes wrong before is an ordinary error reply.
func streamEvents[E any](w http.ResponseWriter, run func(send func(E) error, ready func()) error) {
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	streaming := false // run's calls of send and ready are one at a time
	ready := func() {
		if !streaming {
			streaming = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			rc.Flush()
		}
	}
	err := run(func(e E) error {
		ready()
		if err := enc.Encode(e); err != nil {
			return err
		}
		return rc.Flush()
	}, ready)
	if err != nil && !streaming {
		reply(w, 0, nil, err)
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		reply(w, 0, nil, badRequest{"request body: " + strings.TrimPrefix(err.Error(), "json: ")})
		return false
	}
	return true
}

// reply writes v with status ok, or err as {"error": ...} with the status
// its kind calls for.
func reply(w http.ResponseWriter, ok int, v any, err error) {
	var bad badRequest
	var file errFile
	var port *portError
	var busy conflict
	switch {
	case err == nil && ok == http.StatusNoContent:
		w.WriteHeader(ok)
	case err == nil:
		writeJSON(w, ok, v)
	case errors.As(err, &bad):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case errors.Is(err, errNotFound), errors.Is(err, errNoSnapshot), errors.As(err, &file):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case errors.Is(err, errLimit):
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": err.Error()})
	case errors.Is(err, errInUse), errors.As(err, &busy):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case errors.As(err, &port):
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
