package sandboxsvc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Snapshots: a sandbox's files (its writable layer over its image) kept
// as an image of the service's own (`lodge commit`), from which new
// sandboxes start with those files: a platform prepares a sandbox once
// (packages installed, a repository checked out) and starts the next
// ones from it. What runs in the sandbox is not kept, only its files.
// The images are named localhost/lodge-sandbox-OWNER/NAME:latest, so two
// services never see each other's; a request names a snapshot by NAME.

// Snapshot is one snapshot as the API shows it.
type Snapshot struct {
	Name string `json:"name"`
	// Image is the lodge image it is kept as.
	Image string `json:"image"`
	// From is the sandbox it was taken of (set when it is taken).
	From      string    `json:"from,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// SnapshotRequest names the snapshot to take.
type SnapshotRequest struct {
	Name string `json:"name"`
}

var snapshotName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// errInUse: a snapshot that sandboxes run from cannot be removed.
var errInUse = errors.New("in use")

// conflict is a request the thing it names is not in a state to take
// (409), in words of its own.
type conflict struct{ msg string }

func (c conflict) Error() string { return c.msg }

// snapshotRepo is the repository of a tenant's snapshots: a path of its
// own under the service's (tenant names have no '/' and snapshot names
// none either, so no name of one tenant is another's).
func (s *Service) snapshotRepo(tenant string) string {
	if tenant == "" {
		return "localhost/lodge-sandbox-" + s.owner
	}
	return "localhost/lodge-sandbox-" + s.owner + "/" + tenant
}

func (s *Service) snapshotImage(tenant, name string) string {
	return s.snapshotRepo(tenant) + "/" + name + ":latest"
}

func checkSnapshotName(n string) error {
	if !snapshotName.MatchString(n) {
		return badRequest{fmt.Sprintf("snapshot name %q: want 1 to 63 of a-z 0-9 . _ - (a letter or digit first)", n)}
	}
	return nil
}

// TakeSnapshot keeps sandbox id's files as snapshot r.Name (replacing a
// snapshot of that name no sandbox runs from). The sandbox is frozen
// while its files are read and runs on after.
func (s *Service) TakeSnapshot(ctx context.Context, id string, r SnapshotRequest) (*Snapshot, error) {
	if err := checkSnapshotName(r.Name); err != nil {
		return nil, err
	}
	if _, err := s.Get(id); err != nil {
		return nil, err
	}
	have, err := s.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	replaces := slices.ContainsFunc(have, func(x Snapshot) bool { return x.Name == r.Name })
	if !replaces && len(have) >= s.cfg.MaxSnapshots {
		return nil, fmt.Errorf("%w: %d snapshots kept, the most this service keeps (serve --max-snapshots); remove one first", errLimit, len(have))
	}
	img := s.snapshotImage(tenantOf(ctx), r.Name)
	if replaces && s.inUse(img) {
		return nil, fmt.Errorf("snapshot %s: %w by a sandbox (remove those sandboxes, or take it under another name)", r.Name, errInUse)
	}
	release, err := s.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	start := s.now()
	if err := s.run.Commit(context.WithoutCancel(ctx), id, img); err != nil {
		return nil, fmt.Errorf("snapshot %s of %s: %w", r.Name, id, err)
	}
	s.log.Info("snapshot taken", "sandbox_id", id, "snapshot", r.Name, "ms", s.now().Sub(start).Milliseconds())
	return &Snapshot{Name: r.Name, Image: img, From: id, CreatedAt: s.now()}, nil
}

// Snapshots lists this service's snapshots.
func (s *Service) Snapshots(ctx context.Context) ([]Snapshot, error) {
	imgs, err := s.run.Images(ctx)
	if err != nil {
		return nil, err
	}
	out := []Snapshot{}
	for _, img := range imgs {
		rest, ok := strings.CutPrefix(img, s.snapshotRepo(tenantOf(ctx))+"/")
		if name, latest := strings.CutSuffix(rest, ":latest"); ok && latest && snapshotName.MatchString(name) {
			out = append(out, Snapshot{Name: name, Image: img})
		}
	}
	slices.SortFunc(out, func(a, b Snapshot) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RemoveSnapshot removes a snapshot no sandbox runs from.
func (s *Service) RemoveSnapshot(ctx context.Context, name string) error {
	if err := checkSnapshotName(name); err != nil {
		return err
	}
	if !s.hasSnapshot(ctx, name) {
		return fmt.Errorf("snapshot %s: %w", name, errNoSnapshot)
	}
	img := s.snapshotImage(tenantOf(ctx), name)
	if s.inUse(img) {
		return fmt.Errorf("snapshot %s: %w by a sandbox (remove those sandboxes first)", name, errInUse)
	}
	return s.run.RemoveImage(ctx, img)
}

// errNoSnapshot: no snapshot has that name.
var errNoSnapshot = errors.New("no such snapshot")

// inUse reports whether a sandbox runs from img.
func (s *Service) inUse(img string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sb := range s.boxes {
		if sb.Image == img {
			return true
		}
	}
	return false
}

// hasSnapshot reports whether snapshot name exists.
func (s *Service) hasSnapshot(ctx context.Context, name string) bool {
	have, err := s.Snapshots(ctx)
	return err == nil && slices.ContainsFunc(have, func(x Snapshot) bool { return x.Name == name })
}
