package sandbox

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/layers"
)

// Layers is where the erofs images of image layers are kept and how big a
// container's writable layer may grow.
type Layers struct {
	Store         *layers.Store
	WritableBytes int64
}

// LayeredRoot is a container root given as image layers: the guest
// mounts each layer's erofs image and the container's writable ext4 image
// and joins them with overlayfs, so no host directory is shared for the
// root and each read-only layer is converted once for every sandbox.
type LayeredRoot struct {
	// Lower are the layers' directories on the host, topmost first (as in
	// overlayfs' lowerdir); they must never change (committed snapshots).
	Lower []string
	// Images are erofs images already in the layer store, topmost first
	// (an image pulled by `lodge`); used when Lower is empty.
	Images []string
	// Writable is where the container's writable layer image is made (a
	// path that does not exist yet; removed with the container).
	Writable string
	// KeepWritable keeps the writable image when the container is removed
	// and takes the one already at Writable, if any, instead of a new one:
	// a stopped container of `lodge` started again finds what it wrote,
	// as docker's does.
	KeepWritable bool
	// WritableBytes sizes a new writable layer (0: the store's default).
	WritableBytes int64
}

// CanLayer says whether the sandbox builds roots from layers: layers are
// configured and its guest agent knows how.
func (s *Sandbox) CanLayer() bool {
	return s.layers != nil && s.layers.Store != nil && s.agent.Has(agentv1.CapLayers)
}

// attachLayers converts lr's layers (once per layer, for every sandbox),
// makes the writable image and attaches them all to the share; it returns
// the guest's view of the root. The caller's rollback undoes the
// attachments (c.unmount); the writable image is removed here on error
// and by the container's removal otherwise.
func (c *Container) attachLayers(ctx context.Context, lr *LayeredRoot) (*agentv1.Rootfs, error) {
	st := c.sb.layers
	r := &agentv1.Rootfs{ShareTag: SharedTag, Path: c.id + "/root"}
	converted, fromSnapshotter := 0, 0
	imgs := lr.Images
	if len(lr.Lower) > 0 {
		imgs = nil
		for _, dir := range lr.Lower {
			// containerd's erofs snapshotter made the image already.
			if img := layers.SnapshotterImage(dir); img != "" {
				imgs = append(imgs, img)
				fromSnapshotter++
				continue
			}
			img, made, err := st.Store.FromDir(ctx, dir)
			if err != nil {
				return nil, err
			}
			if made {
				converted++
			}
			imgs = append(imgs, img)
		}
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("a root from layers without layers")
	}
	for i, img := range imgs {
		rel := filepath.Join("layers", strconv.Itoa(i))
		if err := c.attach(ctx, img, rel, true, false); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		r.Layers = append(r.Layers, filepath.Join(c.id, rel))
	}
	if converted > 0 {
		if n, err := st.Store.Prune(); err == nil && n > 0 {
			c.sb.log.Info("removed images of layers that are gone", "count", n)
		}
	}
	if fi, err := os.Lstat(lr.Writable); lr.KeepWritable && err == nil && fi.Mode().IsRegular() {
		c.sb.log.Debug("writable layer kept from the container's last run", "container_id", c.id)
	} else if err := st.Store.NewWritable(ctx, lr.Writable, cmp.Or(lr.WritableBytes, st.WritableBytes)); err != nil {
		return nil, err
	} else if !lr.KeepWritable {
		c.writable = lr.Writable
	}
	c.keepsWritable = lr.KeepWritable
	if err := c.attach(ctx, lr.Writable, "rw.img", false, false); err != nil {
		return nil, fmt.Errorf("writable layer: %w", err)
	}
	r.Writable = filepath.Join(c.id, "rw.img")
	c.sb.log.Debug("root from layers", "container_id", c.id, "layers", len(imgs), "converted", converted,
		"from_snapshotter", fromSnapshotter)
	return r, nil
}

// removeWritable removes the container's writable layer image, if any
// (none: kept, LayeredRoot.KeepWritable).
func (c *Container) removeWritable() error {
	if c.writable == "" {
		return nil
	}
	err := os.Remove(c.writable)
	if os.IsNotExist(err) {
		err = nil
	}
	c.writable = ""
	return err
}
