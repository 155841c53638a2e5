// Package ship is the producer half of an upload, shared by the sidecar and backfill: it
// copies a local TSDB block's files into the staging object store, hashing them on the way,
// and announces the block with a block.ready event. The upload worker does the other half.
package ship

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
)

// Staging is where a producer leaves a block's files for the upload worker (the bus's
// JetStream object store). Put replaces an object of the same name.
type Staging interface {
	Put(ctx context.Context, name string, r io.Reader) error
}

// Publisher publishes an event about one block (the bus: subject
// blockflow.block.<event>.<site>.<ulid>, Nats-Msg-Id "<event>:<site>:<ulid>").
type Publisher interface {
	PublishBlockEvent(ctx context.Context, event, site string, id ulid.ULID, v any) error
}

// Shipper ships the blocks of one site.
type Shipper struct {
	Staging   Staging
	Publisher Publisher
	Site      string
	// Labels are the external labels put on every block; never empty.
	Labels map[string]string
	// Producer is schemas.ProducerSidecar or schemas.ProducerBackfill.
	Producer string
	// LinkDir, when set, is where a block's files are hard-linked (copied across
	// filesystems) before they are read, so that Prometheus compaction or retention cannot
	// delete them halfway through. Without it files are read in place.
	LinkDir string
}

// Ship stages every file of the block b and publishes block.ready; it returns the event.
// Errors that no retry can fix (a block without chunks, an event that does not validate)
// are marked with stage.Permanent; any other error may go away on the next try.
func (s *Shipper) Ship(ctx context.Context, b Local) (schemas.BlockReady, error) {
	ev := schemas.BlockReady{
		Version:  schemas.Version,
		Site:     s.Site,
		ULID:     b.Meta.ULID,
		MinTime:  b.Meta.MinTime,
		MaxTime:  b.Meta.MaxTime,
		Labels:   s.Labels,
		Producer: s.Producer,
	}
	rels, err := blockFiles(b.Dir)
	if err != nil {
		return ev, stage.Permanent(fmt.Errorf("block %s: %w", b.Meta.ULID, err))
	}
	for _, rel := range rels {
		ev.Files = append(ev.Files, schemas.File{RelPath: rel})
	}
	// Check before staging anything: a block that cannot make a valid event never will.
	if err := ev.Validate(); err != nil {
		return ev, stage.Permanent(fmt.Errorf("block %s: %w", b.Meta.ULID, err))
	}
	dir := b.Dir
	if s.LinkDir != "" {
		dir = filepath.Join(s.LinkDir, b.Meta.ULID.String())
		if err := linkFiles(b.Dir, dir, rels); err != nil {
			return ev, fmt.Errorf("block %s: link into %s: %w", b.Meta.ULID, s.LinkDir, err)
		}
		defer os.RemoveAll(dir)
	}
	for i, rel := range rels {
		f, err := s.put(ctx, dir, b.Meta.ULID, rel)
		if err != nil {
			return ev, fmt.Errorf("block %s: %w", b.Meta.ULID, err)
		}
		ev.Files[i] = f
	}
	if err := s.Publisher.PublishBlockEvent(ctx, schemas.EventReady, s.Site, b.Meta.ULID, ev); err != nil {
		return ev, fmt.Errorf("block %s: publish %s: %w", b.Meta.ULID, schemas.EventReady, err)
	}
	return ev, nil
}

// put stages one file, measuring and hashing the bytes as they are sent.
func (s *Shipper) put(ctx context.Context, dir string, id ulid.ULID, rel string) (schemas.File, error) {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return schemas.File{}, err
	}
	defer f.Close()
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(f, h)}
	if err := s.Staging.Put(ctx, schemas.StagedName(s.Site, id, rel), cr); err != nil {
		return schemas.File{}, fmt.Errorf("stage %s: %w", rel, err)
	}
	// Drain whatever Put left unread so size and hash always cover the whole file.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return schemas.File{}, fmt.Errorf("read %s: %w", rel, err)
	}
	return schemas.File{RelPath: rel, Size: cr.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Size returns the total bytes of the event's files.
func Size(ev schemas.BlockReady) int64 {
	var n int64
	for _, f := range ev.Files {
		n += f.Size
	}
	return n
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// blockFiles lists the files a block is made of, relative to dir and sorted: chunks/*,
// index, meta.json. Anything else (tombstones, a Prometheus lock) is not part of a
// Thanos block.
func blockFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		return nil, fmt.Errorf("read chunks dir: %w", err)
	}
	var rels []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			rels = append(rels, block.ChunksDirname+"/"+e.Name())
		}
	}
	for _, name := range []string{block.IndexFilename, block.MetaFilename} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", name)
		}
		rels = append(rels, name)
	}
	sort.Strings(rels)
	return rels, nil
}

// linkFiles hard-links the files rels of src into dst (replacing anything there), copying
// a file when a link is impossible (another filesystem).
func linkFiles(src, dst string, rels []string) error {
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dst, block.ChunksDirname), 0o755); err != nil {
		return err
	}
	for _, rel := range rels {
		from := filepath.Join(src, filepath.FromSlash(rel))
		to := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.Link(from, to); err != nil {
			if err := copyFile(from, to); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(from, to string) (err error) {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}
