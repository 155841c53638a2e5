// Package block knows the Thanos bucket layout: meta.json with its "thanos" section, the
// order in which a block's objects are written and deleted, and the marker files.
package block

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
)

// File names inside a block, as Prometheus and Thanos spell them.
const (
	MetaFilename             = "meta.json"
	IndexFilename            = "index"
	ChunksDirname            = "chunks"
	DeletionMarkFilename     = "deletion-mark.json"
	NoCompactMarkFilename    = "no-compact-mark.json"
	NoDownsampleMarkFilename = "no-downsample-mark.json"
)

// Sources of a block, meta.json's thanos.source.
const (
	SourceSidecar      = "sidecar"
	SourceCompactor    = "compactor"
	SourceBucketUpload = "bucket.upload"
)

// Meta is meta.json: the Prometheus BlockMeta plus the Thanos section.
type Meta struct {
	tsdb.BlockMeta
	Thanos Thanos `json:"thanos"`
}

// Thanos is meta.json's "thanos" section.
type Thanos struct {
	Version    int               `json:"version,omitempty"`
	Labels     map[string]string `json:"labels"`
	Downsample Downsample        `json:"downsample"`
	Source     string            `json:"source"`
	// SegmentFiles is deprecated in Thanos but still written by its sidecar; kept for old readers.
	SegmentFiles []string `json:"segment_files,omitempty"`
	Files        []File   `json:"files,omitempty"`
	// Rewrites is written by "thanos tools bucket rewrite"; kept verbatim so that
	// rewriting meta.json does not drop it.
	Rewrites   json.RawMessage `json:"rewrites,omitempty"`
	IndexStats *IndexStats     `json:"index_stats,omitempty"`
	Extensions any             `json:"extensions,omitempty"`
	UploadTime *time.Time      `json:"upload_time,omitempty"`
}

// Downsample holds the resolution in milliseconds (0, 300000, 3600000).
type Downsample struct {
	Resolution int64 `json:"resolution"`
}

// File is one entry of thanos.files. The meta.json entry has no size.
type File struct {
	RelPath   string `json:"rel_path"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
	Hash      *Hash  `json:"hash,omitempty"`
}

// Hash of a file, as Thanos writes it with --hash-func=SHA256.
type Hash struct {
	Func  string `json:"hashFunc"`
	Value string `json:"value"`
}

// IndexStats are the largest series and chunk sizes in the index, for read sizing.
type IndexStats struct {
	SeriesMaxSize int64 `json:"series_max_size,omitempty"`
	ChunkMaxSize  int64 `json:"chunk_max_size,omitempty"`
}

// ErrBadMeta is wrapped by every error that says meta.json itself is unusable (as opposed
// to unreadable), so a caller can tell a corrupt block from a failing bucket or disk.
var ErrBadMeta = errors.New("bad block meta")

// ParseMeta decodes and checks meta.json; its errors wrap ErrBadMeta.
func ParseMeta(data []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("%w: parse meta.json: %w", ErrBadMeta, err)
	}
	if m.Version != 1 {
		return m, fmt.Errorf("%w: meta.json version %d is not supported (want 1)", ErrBadMeta, m.Version)
	}
	if m.Thanos.Version != 0 && m.Thanos.Version != 1 {
		return m, fmt.Errorf("%w: meta.json thanos.version %d is not supported (want 1)", ErrBadMeta, m.Thanos.Version)
	}
	return m, nil
}

// ReadMetaFile reads <dir>/meta.json.
func ReadMetaFile(dir string) (Meta, error) {
	data, err := os.ReadFile(filepath.Join(dir, MetaFilename))
	if err != nil {
		return Meta{}, err
	}
	m, err := ParseMeta(data)
	if err != nil {
		return m, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// ReadMeta reads <id>/meta.json from the bucket. A missing one gives an error wrapping
// objstore.ErrNotFound, an unusable one an error wrapping ErrBadMeta.
func ReadMeta(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) (Meta, error) {
	rc, err := bkt.Get(ctx, path.Join(id.String(), MetaFilename))
	if err != nil {
		return Meta{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return Meta{}, fmt.Errorf("read %s meta.json: %w", id, err)
	}
	m, err := ParseMeta(data)
	if err != nil {
		return m, fmt.Errorf("%s: %w", id, err)
	}
	return m, nil
}

// Encode writes meta.json as Thanos does: tab-indented JSON.
func (m Meta) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode meta.json: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteMetaFile writes <dir>/meta.json atomically.
func WriteMetaFile(dir string, m Meta) error {
	data, err := m.Encode()
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, MetaFilename+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, MetaFilename))
}

// Record summarises meta for the catalogue.
func (m Meta) Record(state string) schemas.BlockRecord {
	files := make([]schemas.File, 0, len(m.Thanos.Files))
	for _, f := range m.Thanos.Files {
		sf := schemas.File{RelPath: f.RelPath, Size: f.SizeBytes}
		if f.Hash != nil && f.Hash.Func == "SHA256" {
			sf.SHA256 = f.Hash.Value
		}
		files = append(files, sf)
	}
	sources := m.Compaction.Sources
	if len(sources) == 0 {
		sources = []ulid.ULID{m.ULID}
	}
	rec := schemas.BlockRecord{
		Version:    schemas.Version,
		ULID:       m.ULID,
		MinTime:    m.MinTime,
		MaxTime:    m.MaxTime,
		Labels:     m.Thanos.Labels,
		Resolution: m.Thanos.Downsample.Resolution,
		Level:      m.Compaction.Level,
		Sources:    sources,
		Source:     m.Thanos.Source,
		NumSeries:  m.Stats.NumSeries,
		NumSamples: m.Stats.NumSamples,
		Files:      files,
		State:      state,
	}
	if m.Thanos.UploadTime != nil {
		rec.UploadTime = m.Thanos.UploadTime.UnixMilli()
	}
	return rec
}

// GatherFiles lists a local block's chunks segments and index with their sizes, plus a
// meta.json entry without size, sorted by rel_path as Thanos does. With hashes set it also
// fills each file's SHA256.
func GatherFiles(dir string, hashes bool) ([]File, error) {
	var files []File
	add := func(rel string) error {
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		f := File{RelPath: rel, SizeBytes: fi.Size()}
		if hashes {
			sum, err := SHA256File(filepath.Join(dir, filepath.FromSlash(rel)))
			if err != nil {
				return err
			}
			f.Hash = &Hash{Func: "SHA256", Value: sum}
		}
		files = append(files, f)
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(dir, ChunksDirname))
	if err != nil {
		return nil, fmt.Errorf("read chunks dir: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := add(ChunksDirname + "/" + e.Name()); err != nil {
			return nil, err
		}
	}
	if err := add(IndexFilename); err != nil {
		return nil, err
	}
	files = append(files, File{RelPath: MetaFilename})
	sort.Slice(files, func(i, j int) bool { return files[i].RelPath < files[j].RelPath })
	return files, nil
}

// SegmentFiles returns the names of chunk segments among files ("000001", ...).
func SegmentFiles(files []File) []string {
	var segs []string
	for _, f := range files {
		if name, ok := strings.CutPrefix(f.RelPath, ChunksDirname+"/"); ok {
			segs = append(segs, name)
		}
	}
	return segs
}

// Upload writes a local block directory to the bucket in the Thanos order: every chunks/
// segment, then index, then meta.json last (the commit point; a block without meta.json is
// partial and ignored by every reader). meta is what goes into meta.json; its thanos.labels
// must be non-empty. It sets thanos.upload_time just before writing meta.json and returns
// the meta as written. Uploading the same block again overwrites the same objects.
func Upload(ctx context.Context, bkt objstore.Bucket, dir string, meta Meta) (Meta, error) {
	if len(meta.Thanos.Labels) == 0 {
		return meta, errors.New("upload: empty external labels")
	}
	if meta.Version != 1 {
		return meta, fmt.Errorf("upload: meta.json version %d is not supported", meta.Version)
	}
	id := meta.ULID.String()
	put := func(rel string) error {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if err := bkt.Upload(ctx, id+"/"+rel, f, fi.Size()); err != nil {
			return fmt.Errorf("upload %s/%s: %w", id, rel, err)
		}
		return nil
	}
	for _, seg := range SegmentFiles(meta.Thanos.Files) {
		if err := put(ChunksDirname + "/" + seg); err != nil {
			return meta, err
		}
	}
	if err := put(IndexFilename); err != nil {
		return meta, err
	}
	now := time.Now().UTC()
	meta.Thanos.UploadTime = &now
	data, err := meta.Encode()
	if err != nil {
		return meta, err
	}
	if err := bkt.Upload(ctx, id+"/"+MetaFilename, bytes.NewReader(data), int64(len(data))); err != nil {
		return meta, fmt.Errorf("upload %s/meta.json: %w", id, err)
	}
	return meta, nil
}

// Delete removes a block in the Thanos order: meta.json first (the block turns partial and
// vanishes for readers), then every other object, then deletion-mark.json last.
func Delete(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) error {
	dir := id.String()
	if err := bkt.Delete(ctx, dir+"/"+MetaFilename); err != nil {
		return fmt.Errorf("delete %s/meta.json: %w", dir, err)
	}
	var rest []string
	err := bkt.Iter(ctx, dir+"/", true, func(name string) error {
		if name != dir+"/"+MetaFilename && name != dir+"/"+DeletionMarkFilename {
			rest = append(rest, name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, name := range rest {
		if err := bkt.Delete(ctx, name); err != nil {
			return fmt.Errorf("delete %s: %w", name, err)
		}
	}
	if err := bkt.Delete(ctx, dir+"/"+DeletionMarkFilename); err != nil {
		return fmt.Errorf("delete %s/%s: %w", dir, DeletionMarkFilename, err)
	}
	return nil
}
