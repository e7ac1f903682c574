package layers

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func needMkfs(t *testing.T) {
	t.Helper()
	if _, err := lookMkfs(); err != nil {
		t.Skip(err)
	}
}

// superblock reads an ext4 image's superblock.
func superblock(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, sbSize)
	if _, err := f.ReadAt(sb, sbOffset); err != nil {
		t.Fatal(err)
	}
	return sb
}

// fsck fails the test unless e2fsck finds path clean.
func fsck(t *testing.T, path string) {
	t.Helper()
	bin, err := exec.LookPath("e2fsck")
	if err != nil {
		if bin, err = exec.LookPath("/sbin/e2fsck"); err != nil {
			t.Log("no e2fsck: image not checked")
			return
		}
	}
	if out, err := exec.Command(bin, "-f", "-n", path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck %s: %v\n%s", path, err, out)
	}
}

// Writable layers are copies of one blank image per size, each a clean
// ext4 filesystem with its own UUID and hash seed, sparse, never written
// over an existing file.
func TestNewWritable(t *testing.T) {
	needMkfs(t)
	s := &Store{Dir: t.TempDir()}
	dir := t.TempDir()
	var imgs []string
	for _, n := range []string{"a.img", "b.img"} {
		p := filepath.Join(dir, n)
		if err := s.NewWritable(context.Background(), p, 1<<30); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != 1<<30 || st.Blocks*512 > 1<<20 {
			t.Errorf("%s: size %d, %d bytes on disk; want 1 GiB, sparse, under 1 MiB written", n, st.Size, st.Blocks*512)
		}
		fsck(t, p)
		imgs = append(imgs, p)
	}
	blanks, _ := filepath.Glob(filepath.Join(s.Dir, "blank-*"))
	if len(blanks) != 1 {
		t.Fatalf("store holds %v; want one blank image", blanks)
	}
	if fi, err := os.Stat(blanks[0]); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("blank image: %v, %v; want mode 0444", fi, err)
	}
	a, b, blank := superblock(t, imgs[0]), superblock(t, imgs[1]), superblock(t, blanks[0])
	for _, f := range []struct {
		name string
		off  int
	}{{"UUID", sbUUID}, {"hash seed", sbHashSeed}} {
		x, y, z := a[f.off:f.off+16], b[f.off:f.off+16], blank[f.off:f.off+16]
		if bytes.Equal(x, y) || bytes.Equal(x, z) || bytes.Equal(y, z) {
			t.Errorf("%s shared: %x, %x, blank %x", f.name, x, y, z)
		}
	}
	// A copy, not an image of its own: the blank's bytes but for the
	// superblock (an mkfs per layer would differ in its group descriptors,
	// whose checksums are seeded anew).
	head := func(p string) []byte {
		b := make([]byte, 4<<20)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		clear(b[sbOffset : sbOffset+sbSize])
		return b
	}
	if bh := head(blanks[0]); !bytes.Equal(head(imgs[0]), bh) || !bytes.Equal(head(imgs[1]), bh) {
		t.Error("a writable layer differs from the blank image outside its superblock")
	}
	if err := s.NewWritable(context.Background(), imgs[0], 1<<30); err == nil {
		t.Error("NewWritable over an existing file succeeded")
	}
	fsck(t, imgs[0])
}

// Our superblock checksum is the one mkfs.ext4 writes.
func TestSuperblockChecksum(t *testing.T) {
	needMkfs(t)
	p := filepath.Join(t.TempDir(), "x.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p, 64<<20)
	if err := mkfsExt4(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	sb := superblock(t, p)
	if got, want := superblockChecksum(sb), binary.LittleEndian.Uint32(sb[sbChecksum:]); got != want {
		t.Errorf("checksum %#x; mkfs.ext4 wrote %#x", got, want)
	}
}

// An image whose checksums hang on its UUID is refused, untouched.
func TestRenewIdentityRefusesImagesWithoutCsumSeed(t *testing.T) {
	needMkfs(t)
	bin, _ := lookMkfs()
	p := filepath.Join(t.TempDir(), "x.img")
	os.WriteFile(p, nil, 0o600)
	os.Truncate(p, 64<<20)
	if out, err := exec.Command(bin, "-q", "-F", "-t", "ext4", "-O", "metadata_csum,^metadata_csum_seed", p).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	before := superblock(t, p)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := renewIdentity(f); err == nil {
		t.Error("renewIdentity changed the UUID of an image without metadata_csum_seed")
	}
	if !bytes.Equal(before, superblock(t, p)) {
		t.Error("the refused image's superblock was changed")
	}
}

// Concurrent first writable layers of one size make one blank image; a
// failed one leaves no file.
func TestNewWritableConcurrentAndFailure(t *testing.T) {
	needMkfs(t)
	s := &Store{Dir: t.TempDir()}
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.NewWritable(context.Background(), filepath.Join(dir, string(rune('a'+i))+".img"), 256<<20)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writable %d: %v", i, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir, "*")); len(left) != 1 {
		t.Errorf("store holds %v; want only the blank image", left)
	}
	missing := filepath.Join(dir, "no-such-dir", "x.img")
	if err := s.NewWritable(context.Background(), missing, 256<<20); err == nil {
		t.Error("writable layer in a missing directory succeeded")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("failed writable layer left %s: %v", missing, err)
	}
}

// BenchmarkWritableLayer: a container's writable layer as a copy of the
// blank image (what NewWritable does) against an mkfs.ext4 of its own
// (what it did before), 10 GiB each. go test -bench WritableLayer
// ./internal/layers
func BenchmarkWritableLayer(b *testing.B) {
	if _, err := lookMkfs(); err != nil {
		b.Skip(err)
	}
	s := &Store{Dir: b.TempDir()}
	dir := b.TempDir()
	b.Run("copy", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			p := filepath.Join(dir, "c.img")
			if err := s.NewWritable(context.Background(), p, DefaultWritableBytes); err != nil {
				b.Fatal(err)
			}
			os.Remove(p)
		}
	})
	b.Run("mkfs", func(b *testing.B) {
		for b.Loop() {
			p := filepath.Join(dir, "m.img")
			os.WriteFile(p, nil, 0o600)
			os.Truncate(p, DefaultWritableBytes)
			if err := mkfsExt4(context.Background(), p); err != nil {
				b.Fatal(err)
			}
			os.Remove(p)
		}
	})
}

// A damaged blank image (truncated, overwritten) is made again, and the
// writable layer made from it is sound.
func TestDamagedBlankMadeAgain(t *testing.T) {
	needMkfs(t)
	s := &Store{Dir: t.TempDir()}
	dir := t.TempDir()
	if err := s.NewWritable(context.Background(), filepath.Join(dir, "first.img"), 256<<20); err != nil {
		t.Fatal(err)
	}
	blanks, _ := filepath.Glob(filepath.Join(s.Dir, "blank-*.ext4"))
	if len(blanks) != 1 {
		t.Fatalf("blank images: %v", blanks)
	}
	for name, damage := range map[string]func(string) error{
		"truncated":   func(p string) error { return os.Truncate(p, 4096) },
		"overwritten": func(p string) error { return os.WriteFile(p, make([]byte, 8192), 0o444) },
		"bit flipped": func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte{0x5a}, sbOffset+0x78) // volume name
			return err
		},
	} {
		if err := damage(blanks[0]); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".img")
		if err := s.NewWritable(context.Background(), p, 256<<20); err != nil {
			t.Fatalf("%s blank: %v", name, err)
		}
		fsck(t, p)
		if _, err := openBlank(blanks[0], 256<<20); err != nil {
			t.Errorf("%s blank not made again: %v", name, err)
		}
	}
}
