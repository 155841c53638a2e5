package schemas

import "github.com/oklog/ulid/v2"

// Event kinds, the third token of blockflow.block.<event>.<site>.<ulid> and the first part of
// the Nats-Msg-Id "<event>:<site>:<ulid>". Producers and stages name events with these
// without importing the bus.
const (
	EventReady       = "ready"
	EventBackfill    = "backfill"
	EventUploaded    = "uploaded"
	EventCompacted   = "compacted"
	EventDownsampled = "downsampled"
	EventMarked      = "marked"
	EventDeleted     = "deleted"
)

// Producers of a BlockReady event (BlockReady.Producer).
const (
	ProducerSidecar  = "sidecar"
	ProducerBackfill = "backfill"
)

// StagedName is the staging object name of one block file: "<site>/<ulid>/<rel_path>".
func StagedName(site string, id ulid.ULID, rel string) string {
	return site + "/" + id.String() + "/" + rel
}
