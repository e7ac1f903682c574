package layers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultWritableBytes is the size of a container's writable layer: a
// sparse file, so it takes on disk only what the container writes.
const DefaultWritableBytes = 10 << 30

// A container's writable layer is an ext4 image (the upper and work
// directories of its overlay, made by the guest). Every one starts as a
// copy of one blank image per size, made once with mkfs.ext4 and kept in
// the store (blank-<hash of the options>-<size>.ext4), so that no container start waits for
// an mkfs.ext4 process: the copy is the blank's few written blocks, and
// each copy gets a filesystem UUID and directory hash seed of its own
// (with metadata_csum_seed, the checksums do not depend on the UUID, so
// only the superblock is rewritten).
//
// The image has no journal: like an overlay upper directory on the host,
// a container's writable layer does not survive a crash of its machine in
// a state anyone relies on; no resize inode (it is never resized, and its
// reserved descriptor blocks were 4 MB of every image); no backup
// superblocks. The host never mounts it.
var mkfsArgs = []string{"-q", "-F", "-t", "ext4",
	"-O", "^has_journal,^resize_inode,sparse_super2,metadata_csum,metadata_csum_seed",
	"-E", "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,num_backup_sb=0",
	"-L", "lodge-rw"}

// NewWritable makes path a sparse, empty ext4 image of size bytes for a
// container's writable layer, from the store's blank image of that size
// (made first if there is none). On error path does not exist.
func (s *Store) NewWritable(ctx context.Context, path string, size int64) error {
	if size <= 0 {
		size = DefaultWritableBytes
	}
	blank, err := s.blank(ctx, size)
	if err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		blank.Close()
		return fmt.Errorf("writable layer: %w", err)
	}
	err = copySparse(out, blank, size)
	blank.Close()
	if err == nil {
		err = renewIdentity(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writable layer %s: %w", path, err)
	}
	return nil
}

// blank returns the store's blank image of size bytes, open for reading,
// making it (once, whoever asks at the same time) if there is none or if
// it is damaged.
func (s *Store) blank(ctx context.Context, size int64) (*os.File, error) {
	name := blankName(size)
	path := filepath.Join(s.Dir, name+".ext4")
	if f, err := openBlank(path, size); err == nil {
		return f, nil
	}
	have := func() error {
		f, err := openBlank(path, size)
		if err == nil {
			f.Close()
		}
		return err
	}
	_, err := s.makeOnce(ctx, name, path, have, func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return err
		}
		return mkfsExt4(ctx, f.Name())
	})
	if err != nil {
		return nil, fmt.Errorf("blank image: %w", err)
	}
	return openBlank(path, size)
}

// blankName names the blank image of size bytes made with mkfsArgs: a
// change of the options makes a new one.
func blankName(size int64) string {
	h := sha256.Sum256([]byte(strings.Join(mkfsArgs, "\x00")))
	return "blank-" + hex.EncodeToString(h[:])[:12] + "-" + strconv.FormatInt(size, 10)
}

// openBlank opens the blank image at path if it is one: size bytes, an
// ext4 superblock whose checksum matches, kept checksum seed.
func openBlank(path string, size int64) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != size {
		err = fmt.Errorf("%d bytes, want %d", fi.Size(), size)
	}
	if err == nil {
		sb := make([]byte, sbSize)
		if _, err = f.ReadAt(sb, sbOffset); err == nil {
			err = checkSuperblock(sb)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blank image %s: %w", path, err)
	}
	return f, nil
}

func mkfsExt4(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bin, err := lookMkfs()
	if err != nil {
		return err
	}
	out, err := runCmd(ctx, bin, append(append([]string{}, mkfsArgs...), path)...)
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(out))
	}
	return nil
}

func lookMkfs() (string, error) {
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mkfs.ext4 not found (install e2fsprogs)")
}

// copySparse copies src's data regions into dst and makes dst size bytes
// long, leaving holes where src has them.
func copySparse(dst, src *os.File, size int64) error {
	fd := int(src.Fd())
	var off int64
	for {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return fmt.Errorf("read blank image: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("read blank image: %w", err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(dst, data), io.NewSectionReader(src, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return dst.Truncate(size)
}

// The ext4 superblock fields renewIdentity writes (offsets within the
// superblock, which starts 1024 bytes into the image).
const (
	sbOffset       = 1024
	sbSize         = 1024
	sbMagic        = 0x38 // le16 0xEF53
	sbFeatureInc   = 0x60 // le32 incompatible features
	sbFeatureRO    = 0x64 // le32 read-only compatible features
	sbUUID         = 0x68 // 16 bytes
	sbHashSeed     = 0xEC // 16 bytes: directory hash seed
	sbChecksumType = 0x175
	sbChecksum     = 0x3FC // le32 crc32c of the bytes before it

	incompatCsumSeed = 0x2000
	roMetadataCsum   = 0x400
)

// renewIdentity gives the ext4 image f a random UUID and directory hash
// seed. The image must keep its checksum seed in its superblock
// (metadata_csum_seed), so that no checksum but the superblock's own
// depends on the UUID; it has no backup superblocks and no directory
// index yet, so nothing else holds either value.
func renewIdentity(f *os.File) error {
	sb := make([]byte, sbSize)
	if _, err := f.ReadAt(sb, sbOffset); err != nil {
		return fmt.Errorf("read superblock: %w", err)
	}
	if err := checkSuperblock(sb); err != nil {
		return err
	}
	if _, err := rand.Read(sb[sbUUID : sbUUID+16]); err != nil {
		return err
	}
	sb[sbUUID+6] = sb[sbUUID+6]&0x0f | 0x40 // a version 4 (random) UUID
	sb[sbUUID+8] = sb[sbUUID+8]&0x3f | 0x80
	if _, err := rand.Read(sb[sbHashSeed : sbHashSeed+16]); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(sb[sbChecksum:], superblockChecksum(sb))
	if _, err := f.WriteAt(sb, sbOffset); err != nil {
		return fmt.Errorf("write superblock: %w", err)
	}
	return nil
}

// checkSuperblock says whether sb is an ext4 superblock, intact, of an
// image that keeps its checksum seed.
func checkSuperblock(sb []byte) error {
	le := binary.LittleEndian
	if le.Uint16(sb[sbMagic:]) != 0xEF53 {
		return errors.New("not an ext4 image")
	}
	if le.Uint32(sb[sbFeatureInc:])&incompatCsumSeed == 0 || le.Uint32(sb[sbFeatureRO:])&roMetadataCsum == 0 ||
		sb[sbChecksumType] != 1 {
		return errors.New("the image does not keep its checksum seed (metadata_csum_seed)")
	}
	if superblockChecksum(sb) != le.Uint32(sb[sbChecksum:]) {
		return errors.New("superblock checksum does not match")
	}
	return nil
}

// superblockChecksum is ext4's: crc32c seeded with ~0 over the superblock
// up to the checksum, without the final inversion.
func superblockChecksum(sb []byte) uint32 {
	return ^crc32.Checksum(sb[:sbChecksum], castagnoli)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
