// Package schemas holds the versioned events that blockflow's components exchange over
// JetStream, and the catalogue record that describes one block. Events carry references
// (ULIDs, object names, sizes, hashes), never block bytes.
//
// Every event has a Version field; a decoder rejects versions it does not know, so an old
// worker dead-letters a newer event instead of misreading it. The JSON Schema of each type
// lives beside this file (*.schema.json) and is checked against the Go types by a test.
package schemas

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/oklog/ulid/v2"
)

// Version is the event format version that this build writes and reads.
const Version = 1

// Resolutions in milliseconds, as in Thanos' meta.json.
const (
	ResRaw int64 = 0
	Res5m  int64 = 300_000
	Res1h  int64 = 3_600_000
)

// File is one file of a block, relative to the block directory ("chunks/000001", "index",
// "meta.json").
type File struct {
	RelPath string `json:"rel_path"`
	Size    int64  `json:"size_bytes"`
	// SHA256 is the lower-case hex digest of the file's bytes.
	SHA256 string `json:"sha256,omitempty"`
}

// BlockReady says a producer staged a new block's files in the staging object store under
// "<site>/<ulid>/<rel_path>". It is published on blockflow.block.ready.<site>.<ulid>.
type BlockReady struct {
	Version int       `json:"version"`
	Site    string    `json:"site"`
	ULID    ulid.ULID `json:"ulid"`
	MinTime int64     `json:"min_time"`
	MaxTime int64     `json:"max_time"`
	// Labels are the producer's external labels; never empty.
	Labels map[string]string `json:"labels"`
	// Files are every file of the block, meta.json included.
	Files []File `json:"files"`
	// Producer is "sidecar" or "backfill"; it becomes thanos.source ("sidecar" or "bucket.upload").
	Producer string `json:"producer"`
}

// Validate reports the first problem that makes the event unusable.
func (e BlockReady) Validate() error {
	switch {
	case e.Version != Version:
		return fmt.Errorf("unsupported event version %d (want %d)", e.Version, Version)
	case e.Site == "":
		return errors.New("site is empty")
	case e.ULID == (ulid.ULID{}):
		return errors.New("ulid is empty")
	case e.MaxTime <= e.MinTime:
		return fmt.Errorf("time range [%d, %d) is empty", e.MinTime, e.MaxTime)
	case len(e.Labels) == 0:
		return errors.New("external labels are empty")
	}
	var meta, index, chunks bool
	for _, f := range e.Files {
		switch {
		case f.RelPath == "meta.json":
			meta = true
		case f.RelPath == "index":
			index = true
		case len(f.RelPath) > len("chunks/") && f.RelPath[:len("chunks/")] == "chunks/":
			chunks = true
		}
		if f.Size < 0 {
			return fmt.Errorf("file %s has negative size", f.RelPath)
		}
	}
	if !meta || !index || !chunks {
		return errors.New("files must include meta.json, index and at least one chunks/ segment")
	}
	return nil
}

// Block states in the catalogue.
const (
	StateLive    = "live"
	StateMarked  = "marked"  // has a deletion mark; readers drop it once a live block covers its sources
	StateDeleted = "deleted" // removed from the bucket
)

// BlockRecord is the catalogue's value for one block (key: the ULID). It holds what readers
// and planners need without touching the bucket.
type BlockRecord struct {
	Version    int               `json:"version"`
	ULID       ulid.ULID         `json:"ulid"`
	MinTime    int64             `json:"min_time"`
	MaxTime    int64             `json:"max_time"`
	Labels     map[string]string `json:"labels"`
	Resolution int64             `json:"resolution"`
	Level      int               `json:"level"`
	Sources    []ulid.ULID       `json:"sources"`
	// Source is meta.json's thanos.source (sidecar, compactor, bucket.upload, ...).
	Source     string `json:"source"`
	Site       string `json:"site,omitempty"`
	NumSeries  uint64 `json:"num_series"`
	NumSamples uint64 `json:"num_samples"`
	// Files carries sizes so readers can range-read without HEAD calls.
	Files      []File `json:"files"`
	State      string `json:"state"`
	UploadTime int64  `json:"upload_time_ms"`
	// MarkedTime is when the deletion mark was written (ms), zero while live.
	MarkedTime int64 `json:"marked_time_ms,omitempty"`
	// NoCompact and NoDownsample mirror no-compact-mark.json / no-downsample-mark.json.
	NoCompact    string `json:"no_compact_reason,omitempty"`
	NoDownsample string `json:"no_downsample_reason,omitempty"`
}

// Validate reports the first problem that makes the record unusable.
func (r BlockRecord) Validate() error {
	switch {
	case r.Version != Version:
		return fmt.Errorf("unsupported record version %d (want %d)", r.Version, Version)
	case r.ULID == (ulid.ULID{}):
		return errors.New("ulid is empty")
	case r.MaxTime <= r.MinTime:
		return fmt.Errorf("time range [%d, %d) is empty", r.MinTime, r.MaxTime)
	case r.State != StateLive && r.State != StateMarked && r.State != StateDeleted:
		return fmt.Errorf("unknown state %q", r.State)
	}
	return nil
}

// FileSize returns the size of rel, or -1 when the record does not list it.
func (r BlockRecord) FileSize(rel string) int64 {
	for _, f := range r.Files {
		if f.RelPath == rel {
			return f.Size
		}
	}
	return -1
}

// BlockUploaded says a block is committed to the bucket (its meta.json is written).
// It is published on blockflow.block.uploaded.<site>.<ulid>.
type BlockUploaded struct {
	Version int         `json:"version"`
	Record  BlockRecord `json:"record"`
}

// Validate reports the first problem that makes the event unusable.
func (e BlockUploaded) Validate() error {
	if e.Version != Version {
		return fmt.Errorf("unsupported event version %d (want %d)", e.Version, Version)
	}
	return e.Record.Validate()
}

// Validator is implemented by every event type.
type Validator interface{ Validate() error }

// Decode parses and validates an event. Every error it returns means the bytes can never
// become a valid event: callers dead-letter them.
func Decode[E Validator](data []byte) (E, error) {
	var ev E
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("decode %T: %w", ev, err)
	}
	if err := ev.Validate(); err != nil {
		return ev, fmt.Errorf("invalid %T: %w", ev, err)
	}
	return ev, nil
}
