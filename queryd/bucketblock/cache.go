package bucketblock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
)

// ErrDeleted is returned when a block is read after the catalogue said it was deleted.
var ErrDeleted = errors.New("block was deleted")

const tmpSuffix = ".tmp"

// CacheOptions configure a Cache.
type CacheOptions struct {
	// Dir holds one directory per block: <Dir>/<ulid>/index.
	Dir string
	// MaxBytes bounds the total size of cached index files. Files in use are never
	// evicted, so the bound is exceeded while every cached index is being read.
	MaxBytes int64
	// ReadAhead is how many bytes of a chunk segment one range read fetches (default 1 MiB).
	ReadAhead int64
	// Windows is how many read-ahead windows a block keeps while it is read (default 4).
	Windows    int
	Logger     zerolog.Logger
	Registerer prometheus.Registerer
}

// Cache owns what queryd keeps of bucket blocks: index files on local disk, opened
// with mmap, bounded in total size, evicted least recently used; downloads of the
// same index are single-flighted. It is shared by every Block.
type Cache struct {
	bkt       objstore.Bucket
	dir       string
	maxBytes  int64
	readAhead int64
	windows   int
	pool      chunkenc.Pool // Prometheus' encodings and downsampled (0xFF) chunks
	log       zerolog.Logger
	m         *metrics

	// ctx bounds downloads and range reads that do not belong to one caller: a download
	// shared by several queries, and chunk reads (tsdb.ChunkReader has no context).
	ctx    context.Context
	cancel context.CancelFunc
	loads  singleflight.Group

	mu      sync.Mutex
	entries map[ulid.ULID]*entry
	total   int64
}

// entry is one index file on disk; reader is nil until the file is opened.
type entry struct {
	id      ulid.ULID
	size    int64
	lastUse time.Time
	refs    int
	reader  *index.Reader
	// dropped: the block was deleted while in use; the last release removes the file.
	dropped bool
}

// NewCache opens the cache directory and accounts for the index files a previous run left
// there, so they are reused (or evicted) rather than downloaded again.
func NewCache(bkt objstore.Bucket, opts CacheOptions) (*Cache, error) {
	if opts.Dir == "" {
		return nil, errors.New("index cache: directory is empty")
	}
	if opts.ReadAhead <= 0 {
		opts.ReadAhead = 1 << 20
	}
	if opts.Windows <= 0 {
		opts.Windows = 4
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("index cache: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		bkt:       bkt,
		dir:       opts.Dir,
		maxBytes:  opts.MaxBytes,
		readAhead: opts.ReadAhead,
		windows:   opts.Windows,
		pool:      aggrchunk.NewPool(),
		log:       opts.Logger,
		m:         newMetrics(opts.Registerer),
		ctx:       ctx,
		cancel:    cancel,
		entries:   map[ulid.ULID]*entry{},
	}
	if err := c.scan(); err != nil {
		cancel()
		return nil, err
	}
	c.mu.Lock()
	c.evictLocked(nil)
	c.mu.Unlock()
	return c, nil
}

// scan registers the index files already on disk and removes unfinished downloads.
func (c *Cache) scan() error {
	dirs, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	for _, d := range dirs {
		id, err := ulid.ParseStrict(d.Name())
		if err != nil || !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(c.dir, d.Name()))
		if err != nil {
			return fmt.Errorf("index cache: %w", err)
		}
		for _, f := range files {
			p := filepath.Join(c.dir, d.Name(), f.Name())
			if strings.HasSuffix(f.Name(), tmpSuffix) {
				if err := os.Remove(p); err != nil {
					return fmt.Errorf("index cache: remove unfinished download: %w", err)
				}
				continue
			}
			if f.Name() != block.IndexFilename {
				continue
			}
			fi, err := f.Info()
			if err != nil {
				return fmt.Errorf("index cache: %w", err)
			}
			c.entries[id] = &entry{id: id, size: fi.Size(), lastUse: fi.ModTime()}
			c.total += fi.Size()
		}
	}
	c.m.cacheBytes.Set(float64(c.total))
	c.m.cacheFiles.Set(float64(len(c.entries)))
	return nil
}

// Close closes every open index and stops downloads. Blocks must not be read afterwards.
func (c *Cache) Close() error {
	c.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, e := range c.entries {
		if e.reader != nil {
			errs = append(errs, e.reader.Close())
			e.reader = nil
		}
	}
	return errors.Join(errs...)
}

// Prune removes cached files of blocks that keep rejects (blocks deleted while queryd was
// down). Call it once the catalogue snapshot is loaded.
func (c *Cache) Prune(keep func(ulid.ULID) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.entries {
		if e.refs == 0 && !keep(id) {
			c.removeLocked(e)
		}
	}
	dirs, err := os.ReadDir(c.dir)
	if err != nil {
		c.log.Warn().Err(err).Msg("list index cache")
		return
	}
	for _, d := range dirs {
		id, err := ulid.ParseStrict(d.Name())
		if err != nil || !d.IsDir() || c.entries[id] != nil || keep(id) {
			continue
		}
		c.removeDir(id)
	}
}

// acquire returns the open index of b with a reference that release gives back.
func (c *Cache) acquire(ctx context.Context, b *Block) (*index.Reader, func(), error) {
	for {
		if b.dropped.Load() {
			return nil, nil, fmt.Errorf("block %s: %w", b.id, ErrDeleted)
		}
		c.mu.Lock()
		if e := c.entries[b.id]; e != nil && e.reader != nil && !e.dropped {
			e.refs++
			e.lastUse = time.Now()
			c.mu.Unlock()
			var once sync.Once
			return e.reader, func() { once.Do(func() { c.release(e) }) }, nil
		}
		c.mu.Unlock()

		ch := c.loads.DoChan(b.id.String(), func() (any, error) { return nil, c.load(b) })
		select {
		case res := <-ch:
			if res.Err != nil {
				return nil, nil, res.Err
			}
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("block %s: wait for index: %w", b.id, ctx.Err())
		}
		// Loaded: take the reference on the next turn. Under pressure another load may
		// have evicted it in between, in which case it is loaded again.
	}
}

func (c *Cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	e.lastUse = time.Now()
	if e.refs > 0 {
		return
	}
	if e.dropped {
		c.removeLocked(e)
		return
	}
	c.evictLocked(nil)
}

// load makes b's index available: reuse the file on disk when its size is the
// catalogued one, otherwise download it; then open it.
func (c *Cache) load(b *Block) error {
	c.mu.Lock()
	e := c.entries[b.id]
	open, dropped := e != nil && e.reader != nil, e != nil && e.dropped
	c.mu.Unlock()
	if dropped {
		// The catalogue deleted this ULID before; its last readers are still at it.
		return fmt.Errorf("block %s: %w", b.id, ErrDeleted)
	}
	if open {
		return nil
	}

	file := filepath.Join(c.dir, b.id.String(), block.IndexFilename)
	fi, err := os.Stat(file)
	reused := err == nil && (b.indexSize < 0 || fi.Size() == b.indexSize)
	if !reused {
		if err := c.download(b, file); err != nil {
			return err
		}
	}
	r, err := index.NewFileReader(file, index.DecodePostingsRaw)
	if err != nil && reused {
		// A file left by a crash can have the right size and the wrong bytes.
		c.log.Warn().Err(err).Str(logging.FieldBlock, b.id.String()).Msg("cached index unreadable, downloading it again")
		if err := c.download(b, file); err != nil {
			return err
		}
		r, err = index.NewFileReader(file, index.DecodePostingsRaw)
	}
	if err != nil {
		return fmt.Errorf("block %s: open index: %w", b.id, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if b.dropped.Load() {
		r.Close()
		c.dropLocked(b.id)
		return fmt.Errorf("block %s: %w", b.id, ErrDeleted)
	}
	e = c.entries[b.id]
	if e == nil {
		e = &entry{id: b.id}
		c.entries[b.id] = e
	}
	c.total += r.Size() - e.size
	e.size = r.Size()
	e.reader = r
	e.lastUse = time.Now()
	c.evictLocked(e)
	c.m.cacheBytes.Set(float64(c.total))
	c.m.cacheFiles.Set(float64(len(c.entries)))
	return nil
}

// download writes <ulid>/index from the bucket to file through a temporary file, so a
// crash never leaves a partial file under the final name.
func (c *Cache) download(b *Block, file string) error {
	start := time.Now()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("block %s: %w", b.id, err)
	}
	rc, err := c.bkt.Get(c.ctx, path.Join(b.id.String(), block.IndexFilename))
	if err != nil {
		return fmt.Errorf("block %s: download index: %w", b.id, err)
	}
	defer rc.Close()
	tmp := file + tmpSuffix
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("block %s: %w", b.id, err)
	}
	n, err := io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && b.indexSize >= 0 && n != b.indexSize {
		err = fmt.Errorf("got %d bytes, the catalogue says %d", n, b.indexSize)
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		c.m.downloadFailures.Inc()
		return fmt.Errorf("block %s: download index: %w", b.id, err)
	}
	c.m.downloads.Inc()
	c.m.downloadBytes.Add(float64(n))
	c.m.downloadSeconds.Observe(time.Since(start).Seconds())
	c.log.Debug().Str(logging.FieldBlock, b.id.String()).Int64("bytes", n).Dur("took", time.Since(start)).Msg("index downloaded")
	return nil
}

// evictLocked removes least recently used indexes nobody reads until the cache fits,
// never keep (the one just loaded, which its caller is about to use).
func (c *Cache) evictLocked(keep *entry) {
	for c.maxBytes > 0 && c.total > c.maxBytes {
		var lru *entry
		for _, e := range c.entries {
			if e == keep || e.refs > 0 {
				continue
			}
			if lru == nil || e.lastUse.Before(lru.lastUse) {
				lru = e
			}
		}
		if lru == nil {
			return
		}
		c.removeLocked(lru)
		c.m.evictions.Inc()
	}
}

// drop forgets a deleted block: its file goes now, or when its last reader is done.
func (c *Cache) drop(id ulid.ULID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(id)
}

func (c *Cache) dropLocked(id ulid.ULID) {
	e := c.entries[id]
	switch {
	case e == nil:
		c.removeDir(id)
	case e.refs > 0:
		e.dropped = true
	default:
		c.removeLocked(e)
	}
}

func (c *Cache) removeLocked(e *entry) {
	if e.reader != nil {
		if err := e.reader.Close(); err != nil {
			c.log.Warn().Err(err).Str(logging.FieldBlock, e.id.String()).Msg("close index")
		}
		e.reader = nil
	}
	delete(c.entries, e.id)
	c.total -= e.size
	c.removeDir(e.id)
	c.m.cacheBytes.Set(float64(c.total))
	c.m.cacheFiles.Set(float64(len(c.entries)))
}

func (c *Cache) removeDir(id ulid.ULID) {
	if err := os.RemoveAll(filepath.Join(c.dir, id.String())); err != nil {
		c.log.Warn().Err(err).Str(logging.FieldBlock, id.String()).Msg("remove cached block")
	}
}

// Bytes is the total size of the index files on disk.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
