package ship

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/oklog/ulid/v2"
)

// Progress is the list of shipped blocks a producer keeps next to its blocks so a restart
// ships nothing twice. Its JSON is the shape of Thanos' thanos.shipper.json,
// {"version":1,"uploaded":[...]}, which Prometheus' --storage.tsdb.delay-compact-file.path
// also reads to hold back compaction of level-1 blocks not shipped yet.
type Progress struct {
	Version  int         `json:"version"`
	Uploaded []ulid.ULID `json:"uploaded"`
}

// ProgressVersion is the only Progress version there is.
const ProgressVersion = 1

// ReadProgress reads a progress file. A missing file gives an error satisfying
// errors.Is(err, fs.ErrNotExist); any other error means the file is unusable.
func ReadProgress(path string) (map[ulid.ULID]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Progress
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if p.Version != ProgressVersion {
		return nil, fmt.Errorf("%s: version %d is not supported (want %d)", path, p.Version, ProgressVersion)
	}
	done := make(map[ulid.ULID]bool, len(p.Uploaded))
	for _, id := range p.Uploaded {
		done[id] = true
	}
	return done, nil
}

// WriteProgress replaces the progress file atomically and durably: a temporary file,
// fsync, rename, then fsync of the directory, so a crash leaves the old list or the new one.
func WriteProgress(path string, done map[ulid.ULID]bool) error {
	p := Progress{Version: ProgressVersion, Uploaded: make([]ulid.ULID, 0, len(done))}
	for id := range done {
		p.Uploaded = append(p.Uploaded, id)
	}
	slices.SortFunc(p.Uploaded, ulid.ULID.Compare)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(p); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := writeSync(tmp, buf.Bytes()); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}

func writeSync(name string, data []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
