package bus

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/blockflow/blockflow/internal/stage"
)

func TestStaging(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	ctx := testContext(t)
	st := b.Staging()
	name := "eu1/01JB3H2X8M6N7P9Q0R1S2T3V4W/chunks/000001"
	// Larger than one object store chunk (128KiB).
	data := bytes.Repeat([]byte("blockflow"), 50_000)

	if err := st.Put(ctx, name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	size, err := st.Info(ctx, name)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("Info = %d, %v; want %d", size, err, len(data))
	}
	r, err := st.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes (%v), want the %d stored", len(got), err, len(data))
	}

	if err := st.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, name); err != nil {
		t.Errorf("deleting a missing object: %v", err)
	}
	for what, err := range map[string]error{
		"Get":  func() error { _, err := st.Get(ctx, name); return err }(),
		"Info": func() error { _, err := st.Info(ctx, name); return err }(),
	} {
		if !errors.Is(err, ErrNotFound) || !stage.IsNotFound(err) {
			t.Errorf("%s of a deleted object: %v, want ErrNotFound", what, err)
		}
	}
}
