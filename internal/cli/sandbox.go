package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/sandboxsvc"
	"github.com/lodgeruntime/lodge/internal/unixsock"
)

// defaultSandboxSocket is where `lodge sandbox serve` listens unless told.
const defaultSandboxSocket = "/run/lodge/sandbox.sock"

type serveOpts struct {
	listen, tokenFile, tenantsFile string
	egressResolver                 string
	pauseReclaim                   bool
	cfg                            sandboxsvc.Config
}

func addSandboxCommands(root *cobra.Command, a *app) {
	var o serveOpts
	group := &cobra.Command{Use: "sandbox", Short: "the sandbox service for untrusted code (docs/sandbox-service.md)"}
	serve := &cobra.Command{
		Use:   "serve [OPTIONS]",
		Short: "serve the sandbox API: make sandboxes, run commands and move files in them, end them at their deadline",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return a.serveSandboxes(cmd, o) },
	}
	f := serve.Flags()
	f.StringVar(&o.listen, "listen", "unix://"+defaultSandboxSocket, "where to listen: unix://PATH (mode 0600), or tcp://HOST:PORT (with --token-file)")
	f.StringVar(&o.tokenFile, "token-file", "", "a file whose first line is the token every request must bring (Authorization: Bearer TOKEN)")
	f.StringVar(&o.tenantsFile, "tenants-file", "", "callers sharing the service, one per line: NAME TOKEN [MAX_SANDBOXES]; each sees and uses only its own sandboxes and snapshots")
	f.StringVar(&o.cfg.Dir, "dir", "/var/lib/lodge/sandboxes", "where the service keeps a record per sandbox")
	f.StringVar(&o.cfg.DefaultImage, "default-image", "", "a sandbox's image when a request names none (default: the first --image, else busybox)")
	f.StringArrayVar(&o.cfg.Images, "image", nil, "an image sandboxes may use, pulled if missing (repeat; none: any image in lodge's store)")
	f.BoolVar(&o.cfg.AllowPull, "allow-pull", false, "let requests name images lodge does not have, pulled from wherever they name (without --image: any registry the host reaches)")
	f.DurationVar(&o.cfg.DefaultTimeout, "default-timeout", 5*time.Minute, "a sandbox's life when a request gives none")
	f.DurationVar(&o.cfg.MaxTimeout, "max-timeout", time.Hour, "the longest life (and command timeout) a request may ask for")
	f.DurationVar(&o.cfg.MaxPaused, "max-paused", 24*time.Hour, "how long a paused sandbox is kept for a resume before it is removed (it holds its memory meanwhile)")
	f.BoolVar(&o.pauseReclaim, "pause-reclaim", true, "a pause gives the host back the memory a sandbox's file cache holds (lodge pause --reclaim: its files are read again when next used)")
	f.IntVar(&o.cfg.MaxSandboxes, "max-sandboxes", 16, "how many sandboxes may be alive at once")
	f.IntVar(&o.cfg.MaxCommands, "max-commands", 64, "how many commands (and file reads and writes) may run at once, in all sandboxes")
	f.IntVar(&o.cfg.MaxSnapshots, "max-snapshots", 16, "how many snapshots (sandboxes' files kept as images to start sandboxes from) the service keeps")
	f.BoolVar(&o.cfg.AllowNetwork, "allow-network", false, `let requests ask for "network": "bridge" (else sandboxes have no network): the network `+sandboxNetwork+`, whose sandboxes do not reach each other`)
	f.IntVar(&o.cfg.EgressProxy, "egress-proxy-port", 3129, "with --allow-network, the port of the egress proxy on the sandboxes' gateway, which lets a request's allow_out name hosts (0: none)")
	f.IntVar(&o.cfg.EgressDNS, "egress-dns-port", 3153, "with --allow-network, the port (UDP and TCP) of the resolver on the sandboxes' gateway that a sandbox whose allow_out names hosts asks, so that it reaches those names on every port (0: none: names on ports 80 and 443 alone)")
	f.StringVar(&o.egressResolver, "egress-resolver", "", "the DNS server (HOST:PORT) the egress proxy and resolver ask (default: the host's first nameserver)")
	f.StringArrayVar(&o.cfg.DenyOut, "deny-out", []string{"169.254.0.0/16"}, "a destination (IPv4 address or CIDR) no sandbox may open connections to, whatever its allow_out (repeat; the default is link-local, where clouds serve their metadata; none: \"\")")
	group.AddCommand(serve)
	root.AddCommand(group)
}

// sandboxNetwork is the network of the sandboxes the service gives one:
// a lodge network made without traffic between its containers, so that
// one tenant's sandbox cannot reach another's.
const sandboxNetwork = "lodge-sandboxes"

// ensureSandboxNetwork makes sandboxNetwork if it is missing, and
// refuses one that lets its containers reach each other.
func ensureSandboxNetwork() error {
	conf, err := os.ReadFile(networkPath(sandboxNetwork))
	if errors.Is(err, os.ErrNotExist) {
		if err := createNetwork(sandboxNetwork, "", netMode{noICC: true}); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("--allow-network: make the network %s: %w", sandboxNetwork, err)
		}
		conf, err = os.ReadFile(networkPath(sandboxNetwork))
	}
	if err != nil {
		return fmt.Errorf("--allow-network: %w", err)
	}
	if p := confRules(conf); !p.noICC || p.internal {
		return fmt.Errorf("--allow-network: the network %s lets its containers reach each other, or nothing beyond the host: remove it (lodge network rm %s) and the service makes it again", sandboxNetwork, sandboxNetwork)
	}
	return nil
}

// egressListener listens for the egress proxy on port of the sandbox
// network's gateway: the address REDIRECT gives the sandboxes'
// connections. The bridge that carries it is made with the network's
// first member, so the socket binds before the address exists
// (IP_FREEBIND); it is on no other interface of the host.
func egressListener(port int) (net.Listener, error) {
	gw, lc, err := egressGateway()
	if err != nil {
		return nil, fmt.Errorf("--egress-proxy-port: %w", err)
	}
	l, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort(gw, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("--egress-proxy-port %d: %w (another service there? give another port, or 0 for none)", port, err)
	}
	return l, nil
}

// egressDNSListeners listen for the egress resolver on port (UDP and TCP)
// of the sandbox network's gateway, as egressListener does.
func egressDNSListeners(port int) (net.PacketConn, net.Listener, error) {
	gw, lc, err := egressGateway()
	if err != nil {
		return nil, nil, fmt.Errorf("--egress-dns-port: %w", err)
	}
	addr := net.JoinHostPort(gw, strconv.Itoa(port))
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--egress-dns-port %d: %w (another service there? give another port, or 0 for none)", port, err)
	}
	l, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("--egress-dns-port %d: %w (another service there? give another port, or 0 for none)", port, err)
	}
	return pc, l, nil
}

// egressGateway is the sandbox network's gateway address, and how to bind
// to it before it exists.
func egressGateway() (string, net.ListenConfig, error) {
	var lc net.ListenConfig
	conf, err := os.ReadFile(networkPath(sandboxNetwork))
	if err != nil {
		return "", lc, err
	}
	gw := ""
	if l, ok := parseList(conf); ok {
		for _, p := range l.Plugins {
			if p.Type == "bridge" && len(p.IPAM.Ranges) == 1 && len(p.IPAM.Ranges[0]) == 1 {
				gw = p.IPAM.Ranges[0][0].Gateway
			}
		}
	}
	if net.ParseIP(gw).To4() == nil {
		return "", lc, fmt.Errorf("the network %s names no gateway", sandboxNetwork)
	}
	lc.Control = func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_FREEBIND, 1) })
		return errors.Join(err, serr)
	}
	return gw, lc, nil
}

// sandboxListener listens where --listen says.
func sandboxListener(listen string, token bool) (net.Listener, func(), error) {
	if addr, ok := strings.CutPrefix(listen, "tcp://"); ok {
		if !token {
			return nil, nil, errors.New("--listen tcp://: give --token-file or --tenants-file too; over TCP every request must carry a token")
		}
		l, err := net.Listen("tcp", addr)
		return l, func() {}, err
	}
	path, ok := strings.CutPrefix(listen, "unix://")
	if !ok || !filepath.IsAbs(path) {
		return nil, nil, fmt.Errorf("--listen %q: want unix:///ABSOLUTE/PATH or tcp://HOST:PORT", listen)
	}
	if c, err := unixsock.Dial(context.Background(), path); err == nil {
		c.Close()
		return nil, nil, fmt.Errorf("%s: a service already listens there", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, err
	}
	// Connecting takes write permission on the socket, which only its
	// owner has from the start (umask 022 or narrower); then 0600.
	l, err := unixsock.Listen(path)
	if err != nil {
		return nil, nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return nil, nil, err
	}
	return l, func() { os.Remove(path) }, nil
}

func (a *app) serveSandboxes(cmd *cobra.Command, o serveOpts) error {
	if o.tokenFile != "" {
		b, err := readSecret("--token-file", o.tokenFile)
		if err != nil {
			return err
		}
		o.cfg.Token, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
		if len(o.cfg.Token) < 16 {
			return errors.New("--token-file: the token must be at least 16 characters")
		}
	}
	if o.tenantsFile != "" {
		if o.tokenFile != "" {
			return errors.New("--token-file and --tenants-file: give one (a tenant's token is its own)")
		}
		b, err := readSecret("--tenants-file", o.tenantsFile)
		if err != nil {
			return err
		}
		o.cfg.Tenants, err = sandboxsvc.ParseTenants(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("--tenants-file %s: %w", o.tenantsFile, err)
		}
	}
	o.cfg.DenyOut = slices.DeleteFunc(o.cfg.DenyOut, func(d string) bool { return d == "" })
	var proxy, dnsLn net.Listener
	var dnsPC net.PacketConn
	if !o.cfg.AllowNetwork {
		o.cfg.EgressProxy = 0
	}
	if o.cfg.EgressProxy == 0 {
		o.cfg.EgressDNS = 0
	}
	upstream := o.egressResolver
	if o.cfg.EgressDNS != 0 && upstream == "" {
		b, _ := os.ReadFile("/etc/resolv.conf")
		if ns := nameservers(string(b)); len(ns) > 0 {
			upstream = net.JoinHostPort(ns[0], "53")
		} else {
			a.log.Warn("the egress resolver is off: the host's /etc/resolv.conf names no IPv4 nameserver (give --egress-resolver HOST:PORT); names in allow_out reach ports 80 and 443 alone")
			o.cfg.EgressDNS = 0
		}
	}
	if o.cfg.AllowNetwork {
		if err := ensureSandboxNetwork(); err != nil {
			return err
		}
		o.cfg.Network = sandboxNetwork
		if o.cfg.EgressProxy != 0 {
			var err error
			if proxy, err = egressListener(o.cfg.EgressProxy); err != nil {
				return err
			}
			defer proxy.Close()
		}
		if o.cfg.EgressDNS != 0 {
			var err error
			if dnsPC, dnsLn, err = egressDNSListeners(o.cfg.EgressDNS); err != nil {
				return err
			}
			defer dnsPC.Close()
			defer dnsLn.Close()
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	svc, err := sandboxsvc.New(o.cfg, sandboxsvc.LodgeRunner{Bin: self, PauseReclaim: o.pauseReclaim}, a.log)
	if err != nil {
		return err
	}
	defer svc.Close()
	l, cleanup, err := sandboxListener(o.listen, o.cfg.Token != "" || len(o.cfg.Tenants) > 0)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go svc.Reap(ctx, time.Second)
	if proxy != nil {
		var resolver *net.Resolver
		if o.egressResolver != "" {
			resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, o.egressResolver)
			}}
		}
		go svc.ServeEgress(proxy, resolver)
	}
	if dnsPC != nil {
		go svc.ServeEgressDNS(dnsPC, dnsLn, upstream, nil)
	}
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		// Sandboxes outlive the service: the next one takes them up.
		shut, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	a.log.Info("sandbox service listening", "on", l.Addr().String(), "records", o.cfg.Dir)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// readSecret reads a file of tokens, refusing one that users other than
// its owner may read (as ssh refuses such a key): its tokens would be
// theirs too.
func readSecret(flag, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s: other users may read its tokens (mode %04o): chmod 600 %s", flag, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return b, nil
}
