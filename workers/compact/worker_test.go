package compact_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/compact"
	"github.com/blockflow/blockflow/workers/downsample"
	"github.com/blockflow/blockflow/workers/planner"
)

var groupLabels = map[string]string{"cluster": "eu"}

// uploadRange writes and uploads one 2h block per range of [from, to) of data s.
func (e *env) uploadRange(t testing.TB, s series, lbls map[string]string, from, to int64, hashes bool) []schemas.BlockRecord {
	t.Helper()
	var out []schemas.BlockRecord
	for mint := from; mint < to; mint += range2h {
		dir := writeBlock(t, filepath.Join(e.blocksDir, lbls["replica"]), s, mint, mint+range2h)
		out = append(out, e.upload(t, dir, lbls, hashes))
	}
	return out
}

// planOne plans the catalogue and returns the only job.
func (e *env) planOne(t testing.TB, cfg planner.Config) schemas.CompactJob {
	t.Helper()
	res, err := planner.Plan(e.records(t), time.Now(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 1 {
		t.Fatalf("planned %d jobs, want 1", len(res.Jobs))
	}
	return res.Jobs[0]
}

// readBlock returns every sample of the block in dir, by series.
func readBlock(t testing.TB, dir string) map[string][]sample {
	t.Helper()
	b, err := tsdb.OpenBlock(promslog.NewNopLogger(), dir, chunkenc.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := tsdb.NewBlockQuerier(b, b.MinTime(), b.MaxTime())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string][]sample{}
	set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	var it chunkenc.Iterator
	for set.Next() {
		s := set.At()
		it = s.Iterator(it)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out[s.Labels().String()] = append(out[s.Labels().String()], sample{ts, v})
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHandleCompactsCommitsAndIsIdempotent(t *testing.T) {
	e := newEnv(t)
	data := series{n: 6}
	inputs := e.uploadRange(t, data, groupLabels, start, start+5*range2h, true)
	job := e.planOne(t, planner.Config{})
	if len(job.Inputs) != 4 {
		t.Fatalf("job has %d inputs, want 4", len(job.Inputs))
	}
	w := e.newWorker(t, compact.Options{})
	ctx := context.Background()
	if err := w.Handle(ctx, job); err != nil {
		t.Fatal(err)
	}

	out, err := job.OutputULID()
	if err != nil {
		t.Fatal(err)
	}
	meta, err := block.ReadMeta(ctx, e.bkt, out)
	if err != nil {
		t.Fatal(err)
	}
	var wantSources []ulid.ULID
	for _, in := range inputs[:4] {
		wantSources = append(wantSources, in.ULID)
	}
	slices.SortFunc(wantSources, func(a, b ulid.ULID) int { return a.Compare(b) })
	switch {
	case meta.ULID != out:
		t.Errorf("output ULID %s, want %s", meta.ULID, out)
	case meta.MinTime != start || meta.MaxTime != start+8*hour:
		t.Errorf("output range [%d, %d), want [%d, %d)", meta.MinTime, meta.MaxTime, start, start+8*hour)
	case meta.Compaction.Level != 2:
		t.Errorf("output level %d, want 2", meta.Compaction.Level)
	case !slices.Equal(meta.Compaction.Sources, wantSources):
		t.Errorf("compaction.sources = %v, want %v", meta.Compaction.Sources, wantSources)
	case len(meta.Compaction.Parents) != 4:
		t.Errorf("compaction.parents = %v, want the 4 inputs", meta.Compaction.Parents)
	case meta.Thanos.Source != block.SourceCompactor:
		t.Errorf("thanos.source = %q, want compactor", meta.Thanos.Source)
	case !maps.Equal(meta.Thanos.Labels, groupLabels):
		t.Errorf("thanos.labels = %v, want %v", meta.Thanos.Labels, groupLabels)
	case meta.Thanos.UploadTime == nil || len(meta.Thanos.Files) < 3:
		t.Errorf("thanos section incomplete: %+v", meta.Thanos)
	}
	if e.exists(t, out.String()+"/tombstones") {
		t.Error("the output's tombstones were uploaded")
	}
	if rec := e.record(t, out); rec.State != schemas.StateLive || rec.Level != 2 || len(rec.Sources) != 4 {
		t.Errorf("output record = %+v, want live, level 2, 4 sources", rec)
	}
	for _, in := range inputs[:4] {
		rec := e.record(t, in.ULID)
		if rec.State != schemas.StateMarked || rec.MarkedTime == 0 {
			t.Errorf("input %s: state %s marked at %d, want marked", in.ULID, rec.State, rec.MarkedTime)
		}
		if !e.exists(t, in.ULID.String()+"/"+block.DeletionMarkFilename) {
			t.Errorf("input %s has no deletion mark", in.ULID)
		}
	}
	if rec := e.record(t, inputs[4].ULID); rec.State != schemas.StateLive {
		t.Errorf("the newest block is %s, want live", rec.State)
	}

	// Every sample of the inputs, once.
	if got, want := readBlock(t, blockDir(e, out)), data.samples(start, start+8*hour); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("output holds %d series, want %d; or samples differ", len(got), len(want))
	}

	// A redelivery finds the output committed and changes nothing.
	before := bucketObjects(t, e)
	if err := w.Handle(ctx, job); err != nil {
		t.Fatal(err)
	}
	if after := bucketObjects(t, e); !slices.Equal(before, after) {
		t.Errorf("a redelivered job changed the bucket:\nbefore %v\nafter  %v", before, after)
	}
}

func bucketObjects(t testing.TB, e *env) []string {
	t.Helper()
	var names []string
	err := e.bkt.Iter(context.Background(), "", true, func(name string) error {
		if filepath.Base(name) != block.MetaFilename {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestHandleMarksTheLargestInputWhenTheIndexWouldBeTooLarge(t *testing.T) {
	e := newEnv(t)
	small := e.uploadRange(t, series{n: 2}, groupLabels, start, start+2*range2h, true)
	large := e.uploadRange(t, series{n: 50}, groupLabels, start+2*range2h, start+3*range2h, true)
	e.uploadRange(t, series{n: 2}, groupLabels, start+3*range2h, start+5*range2h, true)
	job := e.planOne(t, planner.Config{})

	limit := large[0].FileSize(block.IndexFilename) + small[0].FileSize(block.IndexFilename)
	w := e.newWorker(t, compact.Options{MaxIndexSize: limit})
	err := w.Handle(context.Background(), job)
	if !stage.IsPermanent(err) {
		t.Fatalf("Handle = %v, want a permanent error", err)
	}
	if rec := e.record(t, large[0].ULID); rec.NoCompact != block.NoCompactIndexSize {
		t.Errorf("largest input's no-compact reason = %q, want %q", rec.NoCompact, block.NoCompactIndexSize)
	}
	mark := readNoCompactMark(t, e, large[0].ULID)
	if mark.Reason != block.NoCompactIndexSize || mark.ID != large[0].ULID {
		t.Errorf("no-compact mark = %+v", mark)
	}
	for _, in := range small {
		if e.exists(t, in.ULID.String()+"/"+block.NoCompactMarkFilename) {
			t.Errorf("small input %s got a no-compact mark", in.ULID)
		}
	}
	out, _ := job.OutputULID()
	if e.exists(t, out.String()+"/"+block.MetaFilename) {
		t.Error("an output was written")
	}
}

func readNoCompactMark(t testing.TB, e *env, id ulid.ULID) block.NoCompactMark {
	t.Helper()
	rc, err := e.bkt.Get(context.Background(), id.String()+"/"+block.NoCompactMarkFilename)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var m block.NoCompactMark
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestHandleSkipsAStaleJob(t *testing.T) {
	e := newEnv(t)
	inputs := e.uploadRange(t, series{n: 2}, groupLabels, start, start+5*range2h, true)
	job := e.planOne(t, planner.Config{})
	// Something else compacted an input since the job was planned.
	if _, err := e.bus.Catalogue().Update(context.Background(), inputs[1].ULID, func(r *schemas.BlockRecord, _ bool) error {
		r.State = schemas.StateMarked
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w := e.newWorker(t, compact.Options{})
	if err := w.Handle(context.Background(), job); err != nil {
		t.Fatalf("Handle = %v, want nil (nothing to do)", err)
	}
	out, _ := job.OutputULID()
	if e.exists(t, out.String()+"/"+block.MetaFilename) {
		t.Error("a stale job wrote an output")
	}
	if rec := e.record(t, inputs[0].ULID); rec.State != schemas.StateLive {
		t.Errorf("input of a stale job is %s, want live", rec.State)
	}
}

func TestNewCleansLeftovers(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	left := filepath.Join(dir, "compact", "somejob", "x")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	e.newWorker(t, compact.Options{DataDir: dir})
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover of a killed worker still there (%v)", err)
	}
}

// TestHandleCompactsDownsampledBlocks: 5m blocks (Thanos AggrChunks) compact by level
// like raw ones; their chunks are carried over as they are.
func TestHandleCompactsDownsampledBlocks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var inputs []schemas.BlockRecord
	for i := range int64(5) {
		raw := writeBlock(t, filepath.Join(e.blocksDir, "raw"), series{n: 8}, start+i*range2h, start+(i+1)*range2h)
		meta, err := block.ReadMetaFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		meta.Thanos.Labels = groupLabels
		dir := filepath.Join(e.blocksDir, "5m", fmt.Sprint(i))
		res, err := downsample.Block(ctx, e.log, raw, meta, dir, ulid.Make(), schemas.Res5m)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, e.uploadMeta(t, dir, res.Meta))
	}
	job := e.planOne(t, planner.Config{})
	if job.Resolution != schemas.Res5m || len(job.Inputs) != 4 {
		t.Fatalf("job at resolution %d with %d inputs, want 5m and 4", job.Resolution, len(job.Inputs))
	}
	if err := e.newWorker(t, compact.Options{}).Handle(ctx, job); err != nil {
		t.Fatal(err)
	}
	out, _ := job.OutputULID()
	meta, err := block.ReadMeta(ctx, e.bkt, out)
	if err != nil {
		t.Fatal(err)
	}
	var samples, chunks uint64
	for _, in := range inputs[:4] {
		samples += in.NumSamples
		m, err := block.ReadMeta(ctx, e.bkt, in.ULID)
		if err != nil {
			t.Fatal(err)
		}
		chunks += m.Stats.NumChunks
	}
	if meta.Thanos.Downsample.Resolution != schemas.Res5m || meta.Stats.NumSamples != samples || meta.Stats.NumChunks != chunks {
		t.Errorf("output: resolution %d, %d samples, %d chunks; want 5m, %d, %d",
			meta.Thanos.Downsample.Resolution, meta.Stats.NumSamples, meta.Stats.NumChunks, samples, chunks)
	}
	b, err := tsdb.OpenBlock(promslog.NewNopLogger(), blockDir(e, out), aggrchunk.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := tsdb.NewBlockChunkQuerier(b, b.MinTime(), b.MaxTime())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(ctx, false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	var seen uint64
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() {
			if enc := it.At().Chunk.Encoding(); enc != aggrchunk.Encoding {
				t.Fatalf("chunk encoding %v, want AggrChunk", enc)
			}
			seen++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Err(); err != nil || seen != chunks {
		t.Errorf("read %d chunks (%v), want %d", seen, err, chunks)
	}
}
