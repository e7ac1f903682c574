package sandboxsvc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/state"
)

// Config is the service's: where its records live and the bounds it holds
// callers to.
type Config struct {
	// Dir keeps a record per sandbox.
	Dir string
	// DefaultImage is a sandbox's image when a request names none (unset:
	// the first of Images, else busybox).
	DefaultImage string
	// Images, when not empty, are the only images sandboxes may use.
	Images []string
	// DefaultTimeout and MaxTimeout bound a sandbox's life.
	DefaultTimeout, MaxTimeout time.Duration
	// MaxSandboxes is how many may be alive (or being made) at once.
	MaxSandboxes int
	// MaxCommands is how many commands (and file reads and writes, and
	// snapshots being taken) may run at once, in all sandboxes.
	MaxCommands int
	// MaxSnapshots is how many snapshots the service keeps.
	MaxSnapshots int
	// MaxOutput bounds each stream of a command's output kept for its
	// reply; MaxFile bounds a file read or written.
	MaxOutput, MaxFile int64
	// AllowPull lets a request name an image lodge does not have, which
	// the host then pulls from wherever the name points. Without it only
	// images in lodge's store, or those of Images, are used.
	AllowPull bool
	// AllowNetwork lets a request ask for the bridge network (else every
	// sandbox has none): Network, a lodge network whose containers do
	// not reach each other.
	AllowNetwork bool
	Network      string
	// DenyOut are the destinations (IPv4 CIDRs) no sandbox may open a
	// connection to, whatever its request's allow_out says.
	DenyOut []string
	// EgressProxy is the port of the service's egress proxy on the
	// network's gateway (0: none, and allow_out takes no names);
	// EgressDNS, that of its resolver for sandboxes whose allow_out
	// names hosts (0: none, and names are reached on ports 80 and 443
	// alone, through the proxy).
	EgressProxy, EgressDNS int
	// Token, if set, must come with every request as a bearer token.
	Token string
	// Tenants, if any, are the callers that share the service, each with
	// a token of its own (tenants.go).
	Tenants []Tenant
	// MaxPaused is how long a paused sandbox is kept for a resume
	// before it is removed (pause.go).
	MaxPaused time.Duration
}

// Defaults fills in what c leaves zero.
func (c Config) Defaults() Config {
	if c.DefaultImage == "" && len(c.Images) > 0 {
		c.DefaultImage = c.Images[0]
	} else if c.DefaultImage == "" {
		c.DefaultImage = "busybox"
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 5 * time.Minute
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = time.Hour
	}
	if c.MaxPaused == 0 {
		c.MaxPaused = 24 * time.Hour
	}
	if c.MaxSandboxes == 0 {
		c.MaxSandboxes = 16
	}
	if c.MaxCommands == 0 {
		c.MaxCommands = 64
	}
	if c.MaxSnapshots == 0 {
		c.MaxSnapshots = 16
	}
	if c.MaxOutput == 0 {
		c.MaxOutput = 1 << 20
	}
	if c.MaxFile == 0 {
		c.MaxFile = 64 << 20
	}
	if c.Network == "" {
		c.Network = "bridge"
	}
	return c
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("sandbox service: no directory for its records")
	case c.DefaultTimeout <= 0 || c.MaxTimeout < c.DefaultTimeout:
		return fmt.Errorf("sandbox service: default timeout %v must be positive and at most the longest, %v", c.DefaultTimeout, c.MaxTimeout)
	case len(c.Images) > 0 && !slices.Contains(c.Images, c.DefaultImage):
		return fmt.Errorf("sandbox service: the default image %s is not one of the images offered (--image)", c.DefaultImage)
	case c.MaxPaused < 0:
		return fmt.Errorf("sandbox service: the longest a sandbox stays paused, %v, must be positive", c.MaxPaused)
	case c.MaxSandboxes < 1 || c.MaxCommands < 1 || c.MaxOutput < 1 || c.MaxFile < 1 || c.MaxSnapshots < 1:
		return errors.New("sandbox service: the limits on sandboxes, commands, output, files and snapshots must be positive")
	}
	if _, err := parseDests("--deny-out", c.DenyOut); err != nil {
		return fmt.Errorf("sandbox service: %w", err)
	}
	return nil
}

// Sandbox is a sandbox's record, as the API shows it.
type Sandbox struct {
	ID      string `json:"id"`
	Image   string `json:"image"`
	Network string `json:"network"`
	// IP is its address on the bridge network (none: "").
	IP string `json:"ip,omitempty"`
	// ContainerID is its lodge container's ID.
	ContainerID string `json:"container_id,omitempty"`
	// AllowOut and DenyOut are its request's egress lists.
	AllowOut  []string          `json:"allow_out,omitempty"`
	DenyOut   []string          `json:"deny_out,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	// State is its container's (running, exited, ...), filled in when
	// asked.
	State string `json:"state,omitempty"`
	// Tenant is the caller it is made for ("": the service has none).
	Tenant string `json:"tenant,omitempty"`
	// OnTimeout is "pause" for one paused at its deadline, not removed;
	// AutoResume, one that a call needing it running resumes.
	OnTimeout  string `json:"on_timeout,omitempty"`
	AutoResume bool   `json:"auto_resume,omitempty"`
	// PausedAt is when it was paused (zero: it runs); its ExpiresAt is
	// then when it is removed unless resumed, and LeftSeconds the time
	// it had left, which a resume gives back unless told otherwise.
	PausedAt    time.Time `json:"paused_at,omitzero"`
	LeftSeconds int       `json:"left_seconds,omitempty"`
}

// Service is the sandbox service: records, deadlines and the runner.
type Service struct {
	cfg Config
	// denied is cfg.DenyOut, parsed.
	denied []netip.Prefix
	run    Runner
	log    *slog.Logger
	now    func() time.Time

	// owner is this service's Label value; lock, its hold on cfg.Dir.
	owner string
	lock  *os.File

	mu sync.Mutex // guards boxes, making, proxied, refusals, portConns, watches and tenantRunning
	// boxes are the sandboxes with a record, by ID.
	boxes map[string]*Sandbox
	// making are the IDs whose containers are being made (no record
	// yet), with their tenants.
	making map[string]string
	// proxied counts each sandbox's connections through the egress
	// proxy; refusals, its refused ones logged this minute.
	proxied  map[string]int
	refusals map[string]*refusals
	// portConns counts each sandbox's connections to its ports;
	// watches, its watches of directories.
	portConns map[string]int
	watches   map[string]int
	// running holds a token per command running; tenantRunning counts
	// them by tenant (guarded by mu).
	running       chan struct{}
	tenantRunning map[string]int
	// bg are the sandboxes' background commands, by sandbox and command.
	bg map[string]map[string]*bgCommand
	// turning are the sandboxes being paused or resumed.
	turning map[string]bool
	// lifecycle are the last events of sandboxes' lives; followers,
	// those who follow them (lifecycle.go).
	lifecycle []LifecycleEvent
	followers map[*lifecycleFollower]struct{}
}

// New loads the records in cfg.Dir and returns the service. Call Reap to
// enforce deadlines.
func New(cfg Config, run Runner, log *slog.Logger) (*Service, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox service: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	lock, err := filelock.LockFile(context.Background(), filepath.Join(dir, "service.lock"), false)
	if err != nil {
		return nil, fmt.Errorf("sandbox service: %s is another running service's (each needs a --dir of its own): %w", dir, err)
	}
	sum := sha256.Sum256([]byte(dir))
	denied, _ := parseDests("--deny-out", cfg.DenyOut) // Validate read them
	s := &Service{cfg: cfg, denied: denied, run: run, log: log, now: time.Now, owner: hex.EncodeToString(sum[:6]), lock: lock, boxes: map[string]*Sandbox{}, making: map[string]string{}, portConns: map[string]int{}, watches: map[string]int{},
		running: make(chan struct{}, cfg.MaxCommands), tenantRunning: map[string]int{}, bg: map[string]map[string]*bgCommand{}, turning: map[string]bool{}}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("sandbox service: %w", err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		var sb Sandbox
		if err := state.Read(filepath.Join(cfg.Dir, e.Name()), &sb); err != nil || sb.ID != id {
			log.Warn("sandbox record unreadable: removed", "file", e.Name(), "err", err)
			os.Remove(filepath.Join(cfg.Dir, e.Name()))
			continue
		}
		s.boxes[id] = &sb
	}
	return s, nil
}

// Close lets go of the records' directory (the sandboxes live on).
func (s *Service) Close() { s.lock.Close() }

// errNotFound: no sandbox has that ID.
var errNotFound = errors.New("no such sandbox")

// errLimit: as many sandboxes as allowed are alive.
var errLimit = errors.New("too many sandboxes")

// badRequest is an error in what the caller asked.
type badRequest struct{ msg string }

func (b badRequest) Error() string { return b.msg }

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "sbx-" + hex.EncodeToString(b)
}

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "sbx-")
	if !ok || len(rest) != 12 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}

func (s *Service) recordPath(id string) string { return filepath.Join(s.cfg.Dir, id+".json") }

// CreateRequest is what a caller asks a sandbox to be.
type CreateRequest struct {
	Image string `json:"image"`
	// Snapshot starts it from a snapshot of this service's (instead of
	// an image).
	Snapshot       string            `json:"snapshot"`
	TimeoutSeconds int               `json:"timeout_seconds"`
	Env            map[string]string `json:"env"`
	Memory         string            `json:"memory"`
	// Disk is its writable layer's size ("4g"; none: lodge's default).
	Disk     string            `json:"disk"`
	CPUs     float64           `json:"cpus"`
	Network  string            `json:"network"`
	Metadata map[string]string `json:"metadata"`
	// AllowOut and DenyOut say what it may open connections to, as
	// E2B's lists: a destination in AllowOut may be reached, then one in
	// DenyOut may not, the rest may; never one the service denies.
	AllowOut []string `json:"allow_out"`
	DenyOut  []string `json:"deny_out"`
	// OnTimeout is what its deadline does: "kill" (the default: it is
	// removed) or "pause" (E2B's auto-pause: pause.go).
	OnTimeout string `json:"on_timeout"`
	// AutoResume: a call that needs it running (a command, a file, a
	// port) resumes it if it is paused, instead of a 409.
	AutoResume bool `json:"auto_resume"`
}

// seconds is a request's timeout_seconds as a duration, def where it
// gives none; at most MaxTimeout.
func (s *Service) seconds(n int, def time.Duration) (time.Duration, error) {
	if n == 0 {
		return def, nil
	}
	d := time.Duration(n) * time.Second
	if n < 0 || d > s.cfg.MaxTimeout {
		return 0, badRequest{fmt.Sprintf("timeout_seconds %d: want 1 to %d", n, int(s.cfg.MaxTimeout/time.Second))}
	}
	return d, nil
}

func envList(env map[string]string) ([]string, error) {
	var out []string
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") {
			return nil, badRequest{fmt.Sprintf("env %q: a name without '=' and values without NUL", k)}
		}
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

func (s *Service) checkCreate(tenant string, r *CreateRequest) error {
	switch {
	case r.Snapshot != "" && r.Image != "":
		return badRequest{"give an image or a snapshot, not both"}
	case r.Snapshot != "":
		// A snapshot's image was made here from a sandbox whose image
		// this service offered: it needs no place on the list.
		if err := checkSnapshotName(r.Snapshot); err != nil {
			return err
		}
		r.Image = s.snapshotImage(tenant, r.Snapshot)
	case r.Image == "":
		r.Image = s.cfg.DefaultImage
	}
	if len(s.cfg.Images) > 0 && r.Snapshot == "" {
		if !slices.Contains(s.cfg.Images, r.Image) {
			return badRequest{fmt.Sprintf("image %q is not one this service offers (%s)", r.Image, strings.Join(s.cfg.Images, ", "))}
		}
	}
	if strings.HasPrefix(r.Image, "-") || strings.ContainsAny(r.Image, " \x00") {
		return badRequest{fmt.Sprintf("image %q is not an image reference", r.Image)}
	}
	switch r.Network {
	case "", "none":
		r.Network = "none"
	case "bridge":
		if !s.cfg.AllowNetwork {
			return badRequest{"network bridge: this service gives sandboxes no network (serve --allow-network)"}
		}
	default:
		return badRequest{fmt.Sprintf("network %q: want none or bridge", r.Network)}
	}
	if err := s.checkEgress(r); err != nil {
		return err
	}
	if r.Memory != "" && (strings.HasPrefix(r.Memory, "-") || strings.ContainsAny(r.Memory, " \x00")) {
		return badRequest{fmt.Sprintf("memory %q: want a size such as 512m", r.Memory)}
	}
	if r.Disk != "" && (strings.HasPrefix(r.Disk, "-") || strings.ContainsAny(r.Disk, " =,\x00")) {
		return badRequest{fmt.Sprintf("disk %q: want a size such as 4g", r.Disk)}
	}
	if r.CPUs < 0 {
		return badRequest{"cpus: want a positive number"}
	}
	switch r.OnTimeout {
	case "", "kill":
		r.OnTimeout = ""
	case "pause":
	default:
		return badRequest{fmt.Sprintf("on_timeout %q: want kill or pause", r.OnTimeout)}
	}
	if len(r.Metadata) > 32 {
		return badRequest{"metadata: at most 32 entries"}
	}
	for k, v := range r.Metadata {
		if len(k) > 64 || len(v) > 512 {
			return badRequest{"metadata: keys of at most 64 bytes, values of at most 512"}
		}
	}
	return nil
}

// Create makes a sandbox. A caller that goes away does not stop it half
// made: it is made, and its deadline ends it.
func (s *Service) Create(ctx context.Context, r CreateRequest) (*Sandbox, error) {
	if err := s.checkCreate(tenantOf(ctx), &r); err != nil {
		return nil, err
	}
	life, err := s.seconds(r.TimeoutSeconds, s.cfg.DefaultTimeout)
	if err != nil {
		return nil, err
	}
	env, err := envList(r.Env)
	if err != nil {
		return nil, err
	}
	id := newID()
	tenant := tenantOf(ctx)
	s.mu.Lock()
	if len(s.boxes)+len(s.making) >= s.cfg.MaxSandboxes {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d alive, the most this service runs (serve --max-sandboxes)", errLimit, s.cfg.MaxSandboxes)
	}
	if limit := s.tenantLimit(tenant); limit > 0 {
		mine := 0
		for _, sb := range s.boxes {
			if sb.Tenant == tenant {
				mine++
			}
		}
		for _, t := range s.making {
			if t == tenant {
				mine++
			}
		}
		if mine >= limit {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %d of yours alive, the most you may run", errLimit, limit)
		}
	}
	s.making[id] = tenant
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.making, id)
		s.mu.Unlock()
	}()
	ctx = context.WithoutCancel(ctx)
	start := s.now()
	pull := (s.cfg.AllowPull || len(s.cfg.Images) > 0) && r.Snapshot == ""
	if r.Snapshot != "" && !s.hasSnapshot(ctx, r.Snapshot) {
		return nil, fmt.Errorf("snapshot %s: %w", r.Snapshot, errNoSnapshot)
	}
	args := CreateArgs{Name: id, Image: r.Image, Network: r.Network, Memory: r.Memory, Disk: r.Disk, CPUs: r.CPUs, Env: env, Timeout: life, Owner: s.owner,
		Pull: pull, OnTimeout: r.OnTimeout}
	if r.Network == "bridge" {
		args.Network, args.Egress = s.cfg.Network, s.egressArgs(r.AllowOut, r.DenyOut)
	}
	made, err := s.run.Create(ctx, args)
	if err != nil {
		// Whatever the failed run left, under this name.
		s.run.Remove(ctx, id)
		if !pull {
			err = fmt.Errorf("%w (this service pulls no image: if it is missing, lodge pull it on the host, or serve with --image or --allow-pull)", err)
		}
		return nil, err
	}
	now := s.now()
	sb := &Sandbox{ID: id, Image: r.Image, Network: r.Network, IP: made.IP, ContainerID: made.ID, AllowOut: r.AllowOut, DenyOut: r.DenyOut,
		// Its life counts from before its container started, so that the
		// record's deadline is never later than its monitor's. (When its
		// record was made, after: the reaper takes a record older than
		// its list of containers for one whose container is gone.)
		CreatedAt: now, ExpiresAt: start.Add(life), Metadata: r.Metadata, Tenant: tenant, OnTimeout: r.OnTimeout,
		AutoResume: r.AutoResume}
	if err := state.Write(s.recordPath(id), sb); err != nil {
		s.run.Remove(ctx, id)
		return nil, fmt.Errorf("sandbox %s: record: %w", id, err)
	}
	s.mu.Lock()
	s.boxes[id] = sb
	s.mu.Unlock()
	s.happened("created", *sb, "")
	s.log.Info("sandbox made", "sandbox_id", id, "image", r.Image, "ms", now.Sub(start).Milliseconds(), "expires", sb.ExpiresAt.Format(time.RFC3339))
	return sb, nil
}

// Get returns a copy of a sandbox's record.
func (s *Service) Get(id string) (Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.boxes[id]
	if !ok {
		return Sandbox{}, fmt.Errorf("%w: %s", errNotFound, id)
	}
	return *sb, nil
}

// List returns the sandboxes with their containers' states, oldest first.
func (s *Service) List(ctx context.Context) ([]Sandbox, error) {
	ctrs, err := s.run.List(ctx, s.owner)
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, c := range ctrs {
		states[c.Name] = c.State
	}
	s.mu.Lock()
	out := make([]Sandbox, 0, len(s.boxes))
	for _, sb := range s.boxes {
		if sb.Tenant != tenantOf(ctx) {
			continue
		}
		c := *sb
		c.State = states[c.ID]
		if c.State == "" {
			c.State = "gone"
		}
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// SetTimeout makes a sandbox end seconds from now.
func (s *Service) SetTimeout(ctx context.Context, id string, seconds int) (Sandbox, error) {
	if seconds == 0 {
		return Sandbox{}, badRequest{"timeout_seconds: want 1 or more"}
	}
	life, err := s.seconds(seconds, 0)
	if err != nil {
		return Sandbox{}, err
	}
	if err := s.notPaused(id); err != nil {
		return Sandbox{}, err // a resume takes timeout_seconds
	}
	at := s.now() // before its monitor's deadline moves: never later than it
	if err := s.run.SetTimeout(ctx, id, life); err != nil {
		return Sandbox{}, err
	}
	sb, err := s.change(id, func(c *Sandbox) { c.ExpiresAt = at.Add(life) })
	if err == nil {
		s.happened("updated", sb, "timeout")
	}
	return sb, err
}

// change changes sandbox id's record, on disk and then in memory.
func (s *Service) change(id string, fn func(*Sandbox)) (Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.boxes[id]
	if !ok {
		return Sandbox{}, fmt.Errorf("%w: %s", errNotFound, id)
	}
	c := *sb
	fn(&c)
	if err := state.Write(s.recordPath(id), &c); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s: record: %w", id, err)
	}
	*sb = c
	return c, nil
}

// Remove ends a sandbox and removes it with its record.
func (s *Service) Remove(ctx context.Context, id string) error {
	if _, err := s.Get(id); err != nil {
		return err
	}
	return s.remove(ctx, id, "removed")
}

// remove removes id's container, then its record. A container lodge no
// longer lists is gone, whatever its rm said.
func (s *Service) remove(ctx context.Context, id, why string) error {
	if err := s.run.Remove(ctx, id); err != nil {
		ctrs, lerr := s.run.List(ctx, s.owner)
		if lerr != nil || hasCtr(ctrs, id) {
			return err
		}
	}
	if err := os.Remove(s.recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sandbox %s: record: %w", id, err)
	}
	s.mu.Lock()
	gone, had := s.boxes[id]
	delete(s.boxes, id)
	delete(s.refusals, id)
	s.mu.Unlock()
	if had {
		s.happened("removed", *gone, why)
	}
	s.forget(id)
	s.log.Info("sandbox "+why, "sandbox_id", id)
	return nil
}

func hasCtr(ctrs []Container, name string) bool {
	return slices.ContainsFunc(ctrs, func(c Container) bool { return c.Name == name })
}

// Reap removes, every interval until ctx ends: sandboxes past their
// deadline, records whose containers are gone, and containers of the
// service's that have no record (left by a service that died making
// them). It runs once at once.
func (s *Service) Reap(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.reapOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) reapOnce(ctx context.Context) {
	listed := s.now()
	ctrs, err := s.run.List(ctx, s.owner)
	if err != nil {
		s.log.Warn("sandbox service: cannot list its containers", "err", err)
		return
	}
	states := map[string]string{}
	for _, c := range ctrs {
		states[c.Name] = c.State
	}
	now := s.now()
	type job struct{ id, why string }
	var jobs []job
	s.mu.Lock()
	boxes := make([]Sandbox, 0, len(s.boxes))
	for _, sb := range s.boxes {
		boxes = append(boxes, *sb)
	}
	for _, c := range ctrs {
		_, making := s.making[c.Name]
		if _, ok := s.boxes[c.Name]; !ok && !making && validID(c.Name) {
			jobs = append(jobs, job{c.Name, "removed (no record)"})
		}
	}
	s.mu.Unlock()
	for _, sb := range boxes {
		st, listedNow := states[sb.ID]
		switch {
		case listedNow && s.reconcilePause(ctx, sb, st, now):
		case !now.Before(sb.ExpiresAt):
			jobs = append(jobs, job{sb.ID, "expired"})
		case sb.CreatedAt.Before(listed) && !listedNow:
			jobs = append(jobs, job{sb.ID, "gone (its container was removed)"})
		}
	}
	for _, j := range jobs {
		if err := s.remove(ctx, j.id, j.why); err != nil {
			s.log.Warn("sandbox: cannot remove", "sandbox_id", j.id, "why", j.why, "err", err)
		}
	}
}
