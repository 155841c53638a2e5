package ship_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/internal/stagetest"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
)

func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string // fmt of the map, or the error's start
	}{
		{[]string{"cluster=eu-1", "replica=a"}, "map[cluster:eu-1 replica:a]"},
		{[]string{"k=v=w"}, "map[k:v=w]"},
		{[]string{"k="}, "map[k:]"},
		{[]string{"novalue"}, `label "novalue"`},
		{[]string{"=v"}, `label "=v"`},
		{[]string{"k=a", "k=b"}, `label "k" given twice`},
	} {
		got, err := ship.ParseLabels(tc.in)
		var s string
		if err != nil {
			s = err.Error()
		} else {
			s = fmt.Sprint(got)
		}
		if !strings.HasPrefix(s, tc.want) {
			t.Errorf("ParseLabels(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

func TestSiteFromLabels(t *testing.T) {
	long := map[string]string{"region": strings.Repeat("x", 80)}
	long2 := map[string]string{"region": strings.Repeat("x", 79) + "y"}
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{map[string]string{"replica": "a", "cluster": "eu-1"}, "cluster-eu-1_replica-a"},
		{map[string]string{"dc": "us.east/1 b*>"}, "dc-us-east-1-b--"},
		{map[string]string{"prometheus_replica": "p0"}, "prometheus_replica-p0"},
	} {
		if got := ship.SiteFromLabels(tc.in); got != tc.want {
			t.Errorf("SiteFromLabels(%v) = %q, want %q", tc.in, got, tc.want)
		}
		if err := ship.CheckSite(ship.SiteFromLabels(tc.in)); err != nil {
			t.Errorf("derived site fails its own check: %v", err)
		}
	}
	a, b := ship.SiteFromLabels(long), ship.SiteFromLabels(long2)
	if len(a) > 64 || a == b || ship.CheckSite(a) != nil {
		t.Errorf("long sites %q and %q", a, b)
	}
}

func TestCheckSite(t *testing.T) {
	for site, ok := range map[string]bool{
		"edge-7": true, "eu_1": true, "": false, "a.b": false, "a/b": false, "a b": false, "a*": false,
		strings.Repeat("s", 65): false,
	} {
		if err := ship.CheckSite(site); (err == nil) != ok {
			t.Errorf("CheckSite(%q) = %v", site, err)
		}
	}
}

func TestProgressFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "thanos.shipper.json")
	if _, err := ship.ReadProgress(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	a, b := ulid.MustParse("01JCZ8W4Q6ZB8T3M3K8R2Y7E5N"), ulid.MustParse("01JD1V6YQ0PZ5R7N6W9X3C2B1A")
	if err := ship.WriteProgress(path, map[ulid.ULID]bool{b: true, a: true}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	const want = "{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t\"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N\",\n\t\t\"01JD1V6YQ0PZ5R7N6W9X3C2B1A\"\n\t]\n}\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	done, err := ship.ReadProgress(path)
	if err != nil || len(done) != 2 || !done[a] || !done[b] {
		t.Errorf("read back %v, %v", done, err)
	}
	// Empty is [] not null: Prometheus parses the array.
	if err := ship.WriteProgress(path, nil); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), `"uploaded": []`) {
		t.Errorf("empty file: %s", data)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	for _, bad := range []string{"", "{", `{"version": 2, "uploaded": []}`, `{"version": 1, "uploaded": ["nope"]}`} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ship.ReadProgress(path); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadProgress(%q) = %v, want a parse error", bad, err)
		}
	}
}

func TestScan(t *testing.T) {
	dir := t.TempDir()
	late := blocktest.ID(t, blocktest.Write(t, dir, blocktest.Spec{MinTime: 10_000_000}))
	early := blocktest.ID(t, blocktest.Write(t, dir, blocktest.Spec{MinTime: 0}))
	// A block whose meta.json names another block, and one without meta.json.
	wrong := blocktest.Write(t, dir, blocktest.Spec{MinTime: 5_000_000})
	blocktest.EditMeta(t, wrong, func(m *block.Meta) { m.ULID = early })
	partial := ulid.MustNew(5, nil)
	if err := os.MkdirAll(filepath.Join(dir, partial.String(), "chunks"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "thanos.shipper.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}

	var bad []ulid.ULID
	blocks, present, err := ship.Scan(dir, func(id ulid.ULID, err error) { bad = append(bad, id) })
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[0].Meta.ULID != early || blocks[1].Meta.ULID != late {
		t.Errorf("blocks %v", blocks)
	}
	if len(bad) != 1 || bad[0] != blocktest.ID(t, wrong) {
		t.Errorf("bad %v", bad)
	}
	if len(present) != 3 || present[partial] || !present[bad[0]] {
		t.Errorf("present %v", present)
	}
	if _, _, err := ship.Scan(filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("scan of a missing dir succeeded")
	}
}

func TestShipRejectsBlockWithoutChunks(t *testing.T) {
	dir := blocktest.Write(t, t.TempDir(), blocktest.Spec{})
	m, err := block.ReadMetaFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "chunks")); err != nil {
		t.Fatal(err)
	}
	staging := stagetest.NewStaging()
	s := &ship.Shipper{Staging: staging, Publisher: &stagetest.Publisher{}, Site: "s", Labels: map[string]string{"a": "b"},
		Producer: schemas.ProducerSidecar, LinkDir: t.TempDir()}
	if _, err := s.Ship(context.Background(), ship.Local{Dir: dir, Meta: m}); !stage.IsPermanent(err) {
		t.Errorf("got %v, want a permanent error", err)
	}
	if len(staging.Names()) != 0 {
		t.Error("staged part of a broken block")
	}
}

func TestShipLinksAndCleansUp(t *testing.T) {
	dir := blocktest.Write(t, t.TempDir(), blocktest.Spec{Series: 3})
	m, _ := block.ReadMetaFile(dir)
	// A tombstones file is local only.
	if err := os.WriteFile(filepath.Join(dir, "tombstones"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := t.TempDir()
	staging, pub := stagetest.NewStaging(), &stagetest.Publisher{}
	var sawLinks bool
	staging.FailPut = func(name string) error {
		// While a block ships its files are hard links in LinkDir: the same inode.
		if strings.HasSuffix(name, "/index") {
			a, _ := os.Stat(filepath.Join(dir, "index"))
			b, err := os.Stat(filepath.Join(links, m.ULID.String(), "index"))
			sawLinks = err == nil && os.SameFile(a, b)
		}
		return nil
	}
	s := &ship.Shipper{Staging: staging, Publisher: pub, Site: "s", Labels: map[string]string{"a": "b"},
		Producer: schemas.ProducerSidecar, LinkDir: links}
	ev, err := s.Ship(context.Background(), ship.Local{Dir: dir, Meta: m})
	if err != nil {
		t.Fatal(err)
	}
	if !sawLinks {
		t.Error("files were not read through hard links")
	}
	if entries, _ := os.ReadDir(links); len(entries) != 0 {
		t.Errorf("link dir not cleaned: %v", entries)
	}
	if len(ev.Files) != 3 || len(staging.Names()) != 3 || len(pub.Events(schemas.EventReady)) != 1 {
		t.Errorf("files %+v staged %v", ev.Files, staging.Names())
	}
	if ship.Size(ev) != ev.Files[0].Size+ev.Files[1].Size+ev.Files[2].Size {
		t.Error("Size")
	}
}
