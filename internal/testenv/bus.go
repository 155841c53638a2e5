package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/bus"
)

// StartBus starts an in-process JetStream server (stopped at cleanup) and connects a Bus
// to it; it returns the bus and the server's client URL, for child processes.
func StartBus(t testing.TB) (*bus.Bus, string) {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, srv.ClientURL()
}
