package sandboxsvc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A sandbox's servers, reached through the service: a request to
// /v1/sandboxes/{id}/ports/{port}/PATH is sent on to 127.0.0.1:port in the
// sandbox, as E2B's sandbox host names are, whatever its network (with
// "none", this is the only way in). Each connection is made by lodge
// (Runner.DialPort: `lodge port-forward --stdio`, the agent in the
// sandbox's guest connecting in the container's own network namespace),
// so the host's network is not involved. HTTP, and what upgrades from it
// (WebSocket), pass; the reply is streamed as it comes.

// maxPortConns bounds one sandbox's connections through its ports at once
// (each is a lodge process while it lasts).
const maxPortConns = 64

// portsPrefix is the start of a port's path, followed by ID/ports/PORT.
const portsPrefix = "/v1/sandboxes/"

// TokenHeader may carry the service's token instead of Authorization, so
// that a request to a sandbox's port can bring an Authorization header of
// its own to the sandbox's server.
const TokenHeader = "X-Lodge-Token"

// portTarget is the sandbox and port a proxied request goes to; the
// transport's host key, so that a connection serves one sandbox's port
// only.
func portTarget(id string, port uint16) string {
	return net.JoinHostPort(id, strconv.Itoa(int(port)))
}

// parsePort reads a port's path segment.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != s {
		return 0, badRequest{fmt.Sprintf("port %q: want 1-65535", s)}
	}
	return uint16(n), nil
}

// portProxy is the handler of /v1/sandboxes/{id}/ports/{port}/{path...}.
func (s *Service) portProxy() http.Handler {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			id, p, _ := net.SplitHostPort(addr)
			port, err := parsePort(p)
			if err != nil {
				return nil, err
			}
			return s.DialPort(ctx, id, port)
		},
		MaxConnsPerHost:     maxPortConns,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			id, p := pr.In.PathValue("id"), pr.In.PathValue("port")
			port, _ := parsePort(p) // checked by the handler
			prefix := portsPrefix + id + "/ports/" + p
			rest := strings.TrimPrefix(pr.In.URL.EscapedPath(), prefix)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", portTarget(id, port)
			pr.Out.URL.Path, _ = url.PathUnescape(rest)
			pr.Out.URL.RawPath = rest
			// The sandbox's server sees itself asked at localhost, as
			// a browser on its own machine would (development servers
			// check Host); X-Forwarded-* say where the request came.
			pr.Out.Host = "localhost:" + p
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Prefix", prefix)
			// The service's token never reaches the sandbox.
			pr.Out.Header.Del(TokenHeader)
			if pr.In.Header.Get(TokenHeader) == "" && s.hasTokens() {
				pr.Out.Header.Del("Authorization")
			}
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var pe *portError
			if errors.As(err, &pe) || errors.Is(err, errLimit) || errors.Is(err, errNotFound) {
				reply(w, 0, nil, err)
				return
			}
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf("port %s of sandbox %s: %v", r.PathValue("port"), r.PathValue("id"), err)})
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := parsePort(r.PathValue("port")); err != nil {
			reply(w, 0, nil, err)
			return
		}
		if err := s.awake(r.Context(), r.PathValue("id")); err != nil {
			reply(w, 0, nil, err)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// portError is a connection to a sandbox's port that lodge could not make
// (nothing listens there, the sandbox ended): 502 with lodge's words.
type portError struct{ msg string }

func (e *portError) Error() string { return e.msg }

// DialPort connects to 127.0.0.1:port in sandbox id, within the sandbox's
// bound on such connections.
func (s *Service) DialPort(ctx context.Context, id string, port uint16) (net.Conn, error) {
	if err := s.awake(ctx, id); err != nil {
		return nil, err
	}
	release, err := s.hold(s.portConns, id, maxPortConns,
		fmt.Sprintf("%d connections to sandbox %s's ports open, the most one sandbox may have", maxPortConns, id))
	if err != nil {
		return nil, err
	}
	c, err := s.run.DialPort(ctx, id, port)
	if err != nil {
		release()
		return nil, err
	}
	return &countedConn{Conn: c, done: release}, nil
}

// hold counts one more of sandbox id's in counts (guarded by mu), refused
// with errLimit and refusal at max; release counts it out.
func (s *Service) hold(counts map[string]int, id string, max int, refusal string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if counts[id] >= max {
		return nil, fmt.Errorf("%w: %s", errLimit, refusal)
	}
	counts[id]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if counts[id]--; counts[id] <= 0 {
			delete(counts, id)
		}
	}, nil
}

// countedConn calls done once, when closed.
type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}
