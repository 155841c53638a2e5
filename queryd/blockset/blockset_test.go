package blockset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/queryd/bucketblock"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

// id names a test block: its ULID's entropy is the name, so ULID order is name order.
func id(name string) ulid.ULID {
	var u ulid.ULID
	if err := u.SetTime(1); err != nil {
		panic(err)
	}
	var entropy [10]byte
	copy(entropy[:], name)
	if err := u.SetEntropy(entropy[:]); err != nil {
		panic(err)
	}
	return u
}

func name(u ulid.ULID) string { return strings.TrimRight(string(u.Entropy()), "\x00") }

// rec describes a block: name, state, sources (names), time range in hours; labels
// {cluster=c}, raw unless res is set.
type rec struct {
	name, state string
	sources     []string
	minH, maxH  int64
	cluster     string
	res         int64
}

func (r rec) record() schemas.BlockRecord {
	out := schemas.BlockRecord{
		Version:    schemas.Version,
		ULID:       id(r.name),
		MinTime:    r.minH * 3600_000,
		MaxTime:    r.maxH * 3600_000,
		Labels:     map[string]string{"cluster": cmpOr(r.cluster, "a")},
		Resolution: r.res,
		State:      cmpOr(r.state, schemas.StateLive),
		Files:      []schemas.File{{RelPath: "chunks/000001", Size: 100}, {RelPath: "index", Size: 100}, {RelPath: "meta.json"}},
	}
	if out.MaxTime == 0 {
		out.MaxTime = 2 * 3600_000
	}
	for _, s := range r.sources {
		out.Sources = append(out.Sources, id(s))
	}
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func names(recs []schemas.BlockRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, name(r.ULID))
	}
	slices.Sort(out)
	return out
}

func TestQueryable(t *testing.T) {
	const (
		live    = schemas.StateLive
		marked  = schemas.StateMarked
		deleted = schemas.StateDeleted
	)
	for _, tc := range []struct {
		name string
		recs []rec
		want []string
	}{
		{
			name: "level-1 blocks are their own sources",
			recs: []rec{{name: "a"}, {name: "b"}},
			want: []string{"a", "b"},
		},
		{
			name: "inputs hidden by a live compacted block",
			recs: []rec{{name: "a"}, {name: "b"}, {name: "ab", sources: []string{"a", "b"}}},
			want: []string{"ab"},
		},
		{
			name: "a partial overlap hides nothing",
			recs: []rec{{name: "ab", sources: []string{"a", "b"}}, {name: "bc", sources: []string{"b", "c"}}},
			want: []string{"ab", "bc"},
		},
		{
			// Source ULIDs are unique: the output of a compaction that deduplicated HA
			// replicas has other labels (no replica label) and still hides its inputs.
			name: "across external labels",
			recs: []rec{{name: "a", cluster: "x"}, {name: "ab", sources: []string{"a", "b"}, cluster: "y"}},
			want: []string{"ab"},
		},
		{
			name: "only within the same resolution",
			recs: []rec{{name: "ab", sources: []string{"a", "b"}}, {name: "ab5m", sources: []string{"a", "b"}, res: schemas.Res5m}},
			want: []string{"ab", "ab5m"},
		},
		{
			name: "the same sources twice: the first ULID wins",
			recs: []rec{{name: "x1", sources: []string{"a", "b"}}, {name: "x2", sources: []string{"a", "b"}}},
			want: []string{"x1"},
		},
		{
			name: "marked blocks shown while not covered",
			recs: []rec{{name: "a", state: marked}, {name: "b", state: marked}},
			want: []string{"a", "b"},
		},
		{
			name: "marked block hidden once a live block covers it",
			recs: []rec{{name: "a", state: marked}, {name: "b", state: marked}, {name: "ab", sources: []string{"a", "b"}}},
			want: []string{"ab"},
		},
		{
			name: "marked block not covered by the live one stays",
			recs: []rec{{name: "a", state: marked}, {name: "c", state: marked}, {name: "ab", sources: []string{"a", "b"}}},
			want: []string{"ab", "c"},
		},
		{
			name: "a marked block never hides a live one",
			recs: []rec{{name: "abc", state: marked, sources: []string{"a", "b", "c"}}, {name: "a"}},
			want: []string{"a", "abc"},
		},
		{
			name: "marked blocks deduplicated among themselves",
			recs: []rec{{name: "a", state: marked}, {name: "ab", state: marked, sources: []string{"a", "b"}}},
			want: []string{"ab"},
		},
		{
			name: "deleted blocks are never read",
			recs: []rec{{name: "a", state: deleted}, {name: "b"}},
			want: []string{"b"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recs []schemas.BlockRecord
			for _, r := range tc.recs {
				recs = append(recs, r.record())
			}
			if got := names(queryable(recs)); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func newCache(t *testing.T) (*bucketblock.Cache, string) {
	t.Helper()
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := bucketblock.NewCache(bkt, bucketblock.CacheOptions{Dir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, dir
}

func blockNames(bs []*bucketblock.Block) []string {
	var out []string
	for _, b := range bs {
		out = append(out, name(b.ID()))
	}
	return out
}

func TestSnapshotFor(t *testing.T) {
	c, _ := newCache(t)
	s := New(c, zerolog.Nop(), nil)
	for _, r := range []rec{
		// cluster a: raw 0-2-4-...-10h, 5m over 0-8h, 1h over 0-4h.
		{name: "r0", minH: 0, maxH: 2}, {name: "r2", minH: 2, maxH: 4}, {name: "r4", minH: 4, maxH: 6},
		{name: "r6", minH: 6, maxH: 8}, {name: "r8", minH: 8, maxH: 10},
		{name: "m0", minH: 0, maxH: 8, res: schemas.Res5m, sources: []string{"r0", "r2", "r4", "r6"}},
		{name: "h0", minH: 0, maxH: 4, res: schemas.Res1h, sources: []string{"r0", "r2"}},
		// cluster b: raw only.
		{name: "b0", minH: 0, maxH: 2, cluster: "b"},
	} {
		s.apply(r.record())
	}
	h := int64(3600_000)
	for _, tc := range []struct {
		name       string
		mint, maxt int64
		res        int64
		want       []string
	}{
		{"raw", 0, 10*h - 1, schemas.ResRaw, []string{"b0", "r0", "r2", "r4", "r6", "r8"}},
		{"raw, part of the range", 3 * h, 5 * h, schemas.ResRaw, []string{"r2", "r4"}},
		{"raw, touching a block end", 2*h - 1, 2*h - 1, schemas.ResRaw, []string{"b0", "r0"}},
		{"5m fills its gap with raw", 0, 10*h - 1, schemas.Res5m, []string{"b0", "m0", "r8"}},
		{"1h, then 5m, then raw", 0, 10*h - 1, schemas.Res1h, []string{"b0", "h0", "m0", "r8"}},
		{"1h where it covers the range", h, 3 * h, schemas.Res1h, []string{"b0", "h0"}},
		{"nothing in range", 20 * h, 30 * h, schemas.Res1h, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := blockNames(s.Snapshot().For(tc.mint, tc.maxt, tc.res))
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if mint, maxt, ok := s.Snapshot().TimeRange(); !ok || mint != 0 || maxt != 10*h-1 {
		t.Fatalf("time range [%d, %d] %v", mint, maxt, ok)
	}
	if got := fmt.Sprint(s.Snapshot().LabelSets()); got != `[{cluster="a"} {cluster="b"}]` {
		t.Fatalf("label sets %s", got)
	}
}

func TestSetFollowsCatalogue(t *testing.T) {
	c, cacheDir := newCache(t)
	reg := prometheus.NewRegistry()
	s := New(c, zerolog.Nop(), reg)

	// A stale cache directory from a block deleted while queryd was down.
	stale := filepath.Join(cacheDir, id("gone").String())
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	updates := make(chan schemas.BlockRecord)
	var watches atomic.Int32
	cat := blocktest.CatalogueFunc(func(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
		switch watches.Add(1) {
		case 1:
			apply(rec{name: "a"}.record())
			apply(rec{name: "b"}.record())
			<-release // the snapshot is still loading
			apply(rec{name: "x"}.record())
			synced()
			for {
				select {
				case r, ok := <-updates:
					if !ok {
						return errors.New("connection lost")
					}
					apply(r)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		default:
			// The watch is restarted after the first one fails: x is gone.
			apply(rec{name: "a", state: schemas.StateMarked}.record())
			apply(rec{name: "b", state: schemas.StateDeleted}.record())
			apply(rec{name: "ab", sources: []string{"a", "b"}}.record())
			synced()
			<-ctx.Done()
			return ctx.Err()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, cat) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	if s.Ready() {
		t.Fatal("ready before the catalogue snapshot is loaded")
	}
	close(release)
	waitCtx, waitCancel := context.WithTimeout(ctx, 10*time.Second)
	defer waitCancel()
	if err := s.WaitReady(waitCtx); err != nil {
		t.Fatal(err)
	}
	if got := blockNames(s.Snapshot().All()); !slices.Equal(got, []string{"a", "b", "x"}) {
		t.Fatalf("after sync: %v", got)
	}
	waitFor(t, func() bool { _, err := os.Stat(stale); return errors.Is(err, os.ErrNotExist) }, "stale cache directory removed")

	// An invalid record is ignored, a deleted one dropped.
	updates <- schemas.BlockRecord{ULID: id("bad")}
	updates <- rec{name: "b", state: schemas.StateDeleted}.record()
	waitFor(t, func() bool { return slices.Equal(blockNames(s.Snapshot().All()), []string{"a", "x"}) }, "b dropped")
	if _, ok := s.Record(id("b")); ok {
		t.Fatal("b is still known")
	}

	// The watch breaks and restarts: the replay no longer has x.
	updates <- rec{name: "a", state: schemas.StateMarked}.record()
	waitFor(t, func() bool { r, _ := s.Record(id("a")); return r.State == schemas.StateMarked }, "a marked")
	close(updates) // the first watch fails

	waitFor(t, func() bool {
		return watches.Load() == 2 && slices.Equal(blockNames(s.Snapshot().All()), []string{"ab"})
	}, "resync")
	if _, ok := s.Record(id("x")); ok {
		t.Fatal("x survived the resync")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
