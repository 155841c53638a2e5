package block

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/objstore"
)

// No-compact reasons, as Thanos writes them.
const (
	NoCompactManual          = "manual"
	NoCompactIndexSize       = "index-size-exceeding"
	NoCompactOutOfOrderChunk = "block-index-out-of-order-chunk"
	NoCompactCorrupt         = "corrupt-block" // blockflow: the block cannot be read
)

// DeletionMark is deletion-mark.json.
type DeletionMark struct {
	ID           ulid.ULID `json:"id"`
	Version      int       `json:"version"`
	Details      string    `json:"details,omitempty"`
	DeletionTime int64     `json:"deletion_time"` // unix seconds
}

// NoCompactMark is no-compact-mark.json.
type NoCompactMark struct {
	ID            ulid.ULID `json:"id"`
	Version       int       `json:"version"`
	Details       string    `json:"details,omitempty"`
	NoCompactTime int64     `json:"no_compact_time"` // unix seconds
	Reason        string    `json:"reason"`
}

// NoDownsampleMark is no-downsample-mark.json.
type NoDownsampleMark struct {
	ID               ulid.ULID `json:"id"`
	Version          int       `json:"version"`
	Details          string    `json:"details,omitempty"`
	NoDownsampleTime int64     `json:"no_downsample_time"` // unix seconds
	Reason           string    `json:"reason"`
}

// MarkForDeletion writes <id>/deletion-mark.json unless it exists (marking is idempotent)
// and returns the mark that is in the bucket.
func MarkForDeletion(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, details string, now time.Time) (DeletionMark, error) {
	name := path.Join(id.String(), DeletionMarkFilename)
	var existing DeletionMark
	if ok, err := readJSON(ctx, bkt, name, &existing); err != nil {
		return existing, err
	} else if ok {
		return existing, nil
	}
	m := DeletionMark{ID: id, Version: 1, Details: details, DeletionTime: now.Unix()}
	return m, writeJSON(ctx, bkt, name, m)
}

// ReadDeletionMark reads <id>/deletion-mark.json; ok is false when the block has none (or
// only a partially written one).
func ReadDeletionMark(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) (mark DeletionMark, ok bool, err error) {
	ok, err = readJSON(ctx, bkt, path.Join(id.String(), DeletionMarkFilename), &mark)
	return mark, ok, err
}

// MarkNoCompact writes <id>/no-compact-mark.json (idempotent).
func MarkNoCompact(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, reason, details string, now time.Time) error {
	name := path.Join(id.String(), NoCompactMarkFilename)
	if ok, err := bkt.Exists(ctx, name); err != nil || ok {
		return err
	}
	return writeJSON(ctx, bkt, name, NoCompactMark{ID: id, Version: 1, Details: details, NoCompactTime: now.Unix(), Reason: reason})
}

// MarkNoDownsample writes <id>/no-downsample-mark.json (idempotent).
func MarkNoDownsample(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, reason, details string, now time.Time) error {
	name := path.Join(id.String(), NoDownsampleMarkFilename)
	if ok, err := bkt.Exists(ctx, name); err != nil || ok {
		return err
	}
	return writeJSON(ctx, bkt, name, NoDownsampleMark{ID: id, Version: 1, Details: details, NoDownsampleTime: now.Unix(), Reason: reason})
}

// readJSON decodes name into v; it reports false for a missing object. A partially
// written mark that is not valid JSON counts as missing, as in Thanos.
func readJSON(ctx context.Context, bkt objstore.Bucket, name string, v any) (bool, error) {
	rc, err := bkt.Get(ctx, name)
	if objstore.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	if json.Unmarshal(data, v) != nil {
		return false, nil
	}
	return true, nil
}

func writeJSON(ctx context.Context, bkt objstore.Bucket, name string, v any) error {
	data, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		return err
	}
	if err := bkt.Upload(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
