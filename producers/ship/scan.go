package ship

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
)

// Local is a complete block in a local directory.
type Local struct {
	Dir  string
	Meta block.Meta
}

// Scan lists the complete blocks directly under dir, oldest first (by minTime, then ULID).
// A block is a directory named by a ULID that holds meta.json: Prometheus writes
// "<ulid>.tmp-for-creation" and renames it when done, so such a directory is complete.
// A block whose meta.json cannot be read is passed to bad and left out; present lists
// every ULID directory, readable or not.
func Scan(dir string, bad func(id ulid.ULID, err error)) (blocks []Local, present map[ulid.ULID]bool, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	present = make(map[ulid.ULID]bool)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		id, err := ulid.ParseStrict(e.Name())
		if err != nil {
			continue
		}
		bdir := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(bdir, block.MetaFilename)); os.IsNotExist(err) {
			continue
		}
		present[id] = true
		m, err := block.ReadMetaFile(bdir)
		if err == nil && m.ULID != id {
			err = fmt.Errorf("meta.json names block %s", m.ULID)
		}
		if err != nil {
			bad(id, err)
			continue
		}
		blocks = append(blocks, Local{Dir: bdir, Meta: m})
	}
	sort.Slice(blocks, func(i, j int) bool {
		a, b := blocks[i].Meta, blocks[j].Meta
		if a.MinTime != b.MinTime {
			return a.MinTime < b.MinTime
		}
		return a.ULID.Compare(b.ULID) < 0
	})
	return blocks, present, nil
}
