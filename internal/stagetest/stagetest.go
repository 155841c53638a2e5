// Package stagetest has in-memory stand-ins for the bus surfaces a stage sees (staging
// object store, event publisher, catalogue), for unit tests of producers and workers. They
// keep the contracts the real bus keeps: a missing object or key is stage.ErrNotFound,
// Delete of a missing object succeeds, events are JSON. The real bus is covered by its own
// tests and the end-to-end test.
package stagetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
)

// Staging is an in-memory staging object store.
type Staging struct {
	mu      sync.Mutex
	objects map[string][]byte
	// FailPut, when set, is called before each Put; an error it returns fails the Put.
	FailPut func(name string) error
	// FailGet, when set, is called before each Get; an error it returns fails the Get.
	FailGet func(name string) error
}

// NewStaging returns an empty store.
func NewStaging() *Staging { return &Staging{objects: make(map[string][]byte)} }

// Put stores all of r under name.
func (s *Staging) Put(ctx context.Context, name string, r io.Reader) error {
	if err := s.fail(s.FailPut, name); err != nil {
		return err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[name] = data
	return nil
}

// Get returns the object, or an error wrapping stage.ErrNotFound.
func (s *Staging) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := s.fail(s.FailGet, name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objects[name]
	if !ok {
		return nil, fmt.Errorf("staging %s: %w", name, stage.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Delete removes the object; a missing one is not an error.
func (s *Staging) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, name)
	return nil
}

// Names lists the stored objects, sorted.
func (s *Staging) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.objects))
}

// Object returns a stored object's bytes (nil when missing).
func (s *Staging) Object(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects[name]
}

// Snapshot copies the store's contents; Restore puts such a copy back.
func (s *Staging) Snapshot() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.objects)
}

// Restore replaces the contents with a Snapshot.
func (s *Staging) Restore(objects map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects = maps.Clone(objects)
}

func (s *Staging) fail(f func(string) error, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(name)
}

// Event is one published event.
type Event struct {
	Kind  string // "ready", "uploaded", ...
	Site  string
	ULID  ulid.ULID
	MsgID string // the Nats-Msg-Id the bus would use
	Data  []byte // JSON
}

// Publisher records published events.
type Publisher struct {
	mu     sync.Mutex
	events []Event
	// Fail, when set, is called before each publish; an error it returns fails it.
	Fail func(kind string, id ulid.ULID) error
}

// PublishBlockEvent records v as JSON.
func (p *Publisher) PublishBlockEvent(ctx context.Context, kind, site string, id ulid.ULID, v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Fail != nil {
		if err := p.Fail(kind, id); err != nil {
			return err
		}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	p.events = append(p.events, Event{Kind: kind, Site: site, ULID: id, MsgID: kind + ":" + site + ":" + id.String(), Data: data})
	return nil
}

// Events returns the events of one kind in publish order ("" for all).
func (p *Publisher) Events(kind string) []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Event
	for _, e := range p.events {
		if kind == "" || e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// Decode parses and validates an event's JSON as E.
func Decode[E schemas.Validator](e Event) (E, error) { return schemas.Decode[E](e.Data) }

// Catalogue is an in-memory catalogue with a revision per key.
type Catalogue struct {
	mu      sync.Mutex
	records map[ulid.ULID]schemas.BlockRecord
	revs    map[ulid.ULID]uint64
	rev     uint64
	// FailPut, when set, is called before each write (Put or Update); an error it returns
	// fails it.
	FailPut func(rec schemas.BlockRecord) error
}

// Put stores rec after validating it, as the bus does.
func (c *Catalogue) Put(ctx context.Context, rec schemas.BlockRecord) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.put(rec)
}

// Update lets fn change the record (exists is false when there is none) and stores it, as
// the bus does; holding the lock throughout, it never has to start over.
func (c *Catalogue) Update(ctx context.Context, id ulid.ULID, fn func(rec *schemas.BlockRecord, exists bool) error) (schemas.BlockRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, exists := c.records[id]
	if err := fn(&rec, exists); err != nil {
		return rec, err
	}
	if rec.ULID == (ulid.ULID{}) {
		rec.ULID = id
	}
	if rec.ULID != id {
		return rec, fmt.Errorf("update catalogue record %s: the update changed the ULID to %s", id, rec.ULID)
	}
	return rec, c.put(rec)
}

func (c *Catalogue) put(rec schemas.BlockRecord) error {
	if c.FailPut != nil {
		if err := c.FailPut(rec); err != nil {
			return err
		}
	}
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("catalogue put %s: %w", rec.ULID, err)
	}
	if c.records == nil {
		c.records = make(map[ulid.ULID]schemas.BlockRecord)
		c.revs = make(map[ulid.ULID]uint64)
	}
	c.rev++
	c.records[rec.ULID] = rec
	c.revs[rec.ULID] = c.rev
	return nil
}

// Get returns the record and its revision, or an error wrapping stage.ErrNotFound.
func (c *Catalogue) Get(ctx context.Context, id ulid.ULID) (schemas.BlockRecord, uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok := c.records[id]
	if !ok {
		return rec, 0, fmt.Errorf("catalogue %s: %w", id, stage.ErrNotFound)
	}
	return rec, c.revs[id], nil
}

// Len is the number of records.
func (c *Catalogue) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.records)
}
