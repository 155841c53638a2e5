package block_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

// Thanos writes meta.json with a tab-indented json.Encoder; these are in that exact shape.
const sidecarMeta = `{
	"ulid": "01JCZ8W4Q6ZB8T3M3K8R2Y7E5N",
	"minTime": 1731456000000,
	"maxTime": 1731463200000,
	"stats": {
		"numSamples": 1440000,
		"numFloatSamples": 1440000,
		"numSeries": 12000,
		"numChunks": 12000
	},
	"compaction": {
		"level": 1,
		"sources": [
			"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N"
		]
	},
	"version": 1,
	"thanos": {
		"labels": {
			"cluster": "eu-1",
			"replica": "a"
		},
		"downsample": {
			"resolution": 0
		},
		"source": "sidecar",
		"segment_files": [
			"000001"
		],
		"files": [
			{
				"rel_path": "chunks/000001",
				"size_bytes": 2171840,
				"hash": {
					"hashFunc": "SHA256",
					"value": "0b9f6ad1e8ab4e4dbb1e6ec3e1cf4b5f0c3a04b9f1a7d0e2f3b86c7e4a3d5e6f"
				}
			},
			{
				"rel_path": "index",
				"size_bytes": 1034652
			},
			{
				"rel_path": "meta.json"
			}
		],
		"upload_time": "2024-11-13T01:00:05.123456789Z"
	}
}
`

const compactorMeta = `{
	"ulid": "01JD1V6YQ0PZ5R7N6W9X3C2B1A",
	"minTime": 1731456000000,
	"maxTime": 1731628800000,
	"stats": {
		"numSamples": 34560000,
		"numSeries": 12000,
		"numChunks": 288000
	},
	"compaction": {
		"level": 3,
		"sources": [
			"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N",
			"01JCZFQ3G8M7K6J5H4G3F2E1D0"
		],
		"parents": [
			{
				"ulid": "01JCZ8W4Q6ZB8T3M3K8R2Y7E5N",
				"minTime": 1731456000000,
				"maxTime": 1731463200000
			},
			{
				"ulid": "01JCZFQ3G8M7K6J5H4G3F2E1D0",
				"minTime": 1731463200000,
				"maxTime": 1731628800000
			}
		]
	},
	"version": 1,
	"thanos": {
		"version": 1,
		"labels": {
			"cluster": "eu-1"
		},
		"downsample": {
			"resolution": 300000
		},
		"source": "compactor",
		"segment_files": [
			"000001",
			"000002"
		],
		"files": [
			{
				"rel_path": "chunks/000001",
				"size_bytes": 536870900
			},
			{
				"rel_path": "chunks/000002",
				"size_bytes": 1200
			},
			{
				"rel_path": "index",
				"size_bytes": 1034652
			},
			{
				"rel_path": "meta.json"
			}
		],
		"rewrites": [
			{
				"sources": [
					"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N"
				],
				"deletions_applied": [
					{
						"matchers": "{__name__=\"up\"}",
						"intervals": [
							{
								"mint": 1731456000000,
								"maxt": 1731457000000
							}
						]
					}
				]
			}
		],
		"index_stats": {
			"series_max_size": 1024,
			"chunk_max_size": 512
		},
		"extensions": {
			"tenant": "a"
		}
	}
}
`

func TestMetaRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
	}{
		{"sidecar", sidecarMeta},
		{"compactor with rewrites and index stats", compactorMeta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := block.ParseMeta([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte(tc.json)) {
				t.Errorf("re-encoded meta.json differs:\n%s\nwant:\n%s", got, tc.json)
			}

			// And through a file.
			dir := t.TempDir()
			if err := block.WriteMetaFile(dir, m); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, block.MetaFilename))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, []byte(tc.json)) {
				t.Errorf("written meta.json differs:\n%s", data)
			}
			if _, err := os.Stat(filepath.Join(dir, block.MetaFilename+".tmp")); !os.IsNotExist(err) {
				t.Errorf("temporary file left behind: %v", err)
			}
		})
	}
}

func TestParseMetaFields(t *testing.T) {
	m, err := block.ParseMeta([]byte(sidecarMeta))
	if err != nil {
		t.Fatal(err)
	}
	wantTime := time.Date(2024, 11, 13, 1, 0, 5, 123456789, time.UTC)
	switch {
	case m.ULID != ulid.MustParse("01JCZ8W4Q6ZB8T3M3K8R2Y7E5N"):
		t.Errorf("ulid %s", m.ULID)
	case m.Stats.NumSeries != 12000 || m.Compaction.Level != 1:
		t.Errorf("stats %+v, compaction %+v", m.Stats, m.Compaction)
	case m.Thanos.Labels["cluster"] != "eu-1" || m.Thanos.Source != block.SourceSidecar:
		t.Errorf("thanos %+v", m.Thanos)
	case m.Thanos.Files[0].Hash == nil || m.Thanos.Files[0].Hash.Func != "SHA256":
		t.Errorf("hash %+v", m.Thanos.Files[0].Hash)
	case m.Thanos.UploadTime == nil || !m.Thanos.UploadTime.Equal(wantTime):
		t.Errorf("upload time %v", m.Thanos.UploadTime)
	}
}

func TestParseMetaRejects(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"not json", `{"ulid":`, "parse meta.json"},
		{"meta version 2", `{"ulid":"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N","version":2}`, "version 2"},
		{"no version", `{"ulid":"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N"}`, "version 0"},
		{"thanos version 2", `{"ulid":"01JCZ8W4Q6ZB8T3M3K8R2Y7E5N","version":1,"thanos":{"version":2}}`, "thanos.version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := block.ParseMeta([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMetaRecord(t *testing.T) {
	m, err := block.ParseMeta([]byte(compactorMeta))
	if err != nil {
		t.Fatal(err)
	}
	rec := m.Record(schemas.StateLive)
	if err := rec.Validate(); err != nil {
		t.Fatal(err)
	}
	switch {
	case rec.ULID != m.ULID || rec.MinTime != m.MinTime || rec.MaxTime != m.MaxTime:
		t.Errorf("identity: %+v", rec)
	case rec.Resolution != schemas.Res5m || rec.Level != 3 || rec.Source != block.SourceCompactor:
		t.Errorf("resolution %d level %d source %q", rec.Resolution, rec.Level, rec.Source)
	case len(rec.Sources) != 2 || rec.NumSeries != 12000 || rec.NumSamples != 34560000:
		t.Errorf("sources %v stats %d/%d", rec.Sources, rec.NumSeries, rec.NumSamples)
	case rec.FileSize("chunks/000002") != 1200 || rec.FileSize("index") != 1034652 || rec.FileSize("nope") != -1:
		t.Errorf("files %+v", rec.Files)
	case rec.UploadTime != 0:
		t.Errorf("upload time %d without thanos.upload_time", rec.UploadTime)
	}

	// A level-1 block lists itself as its source even when meta.json does not.
	m.Compaction.Sources = nil
	if rec := m.Record(schemas.StateLive); len(rec.Sources) != 1 || rec.Sources[0] != m.ULID {
		t.Errorf("sources %v", rec.Sources)
	}
}

func TestGatherFiles(t *testing.T) {
	dir := blocktest.Write(t, t.TempDir(), blocktest.Spec{Series: 20})
	for _, hashes := range []bool{false, true} {
		files, err := block.GatherFiles(dir, hashes)
		if err != nil {
			t.Fatal(err)
		}
		var rels []string
		for _, f := range files {
			rels = append(rels, f.RelPath)
			switch {
			case f.RelPath == block.MetaFilename:
				if f.SizeBytes != 0 || f.Hash != nil {
					t.Errorf("meta.json entry has size or hash: %+v", f)
				}
				continue
			case f.SizeBytes <= 0:
				t.Errorf("%s: size %d", f.RelPath, f.SizeBytes)
			}
			if !hashes {
				if f.Hash != nil {
					t.Errorf("%s: unexpected hash", f.RelPath)
				}
				continue
			}
			want, err := block.SHA256File(filepath.Join(dir, filepath.FromSlash(f.RelPath)))
			if err != nil {
				t.Fatal(err)
			}
			if f.Hash == nil || f.Hash.Func != "SHA256" || f.Hash.Value != want {
				t.Errorf("%s: hash %+v, want %s", f.RelPath, f.Hash, want)
			}
		}
		if got := strings.Join(rels, " "); got != "chunks/000001 index meta.json" {
			t.Errorf("files %q", got)
		}
		if segs := block.SegmentFiles(files); len(segs) != 1 || segs[0] != "000001" {
			t.Errorf("segments %v", segs)
		}
	}
}
