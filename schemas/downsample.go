package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/oklog/ulid/v2"
)

// JobDownsample is the kind of a downsampling job: the fourth token of
// blockflow.job.downsample.<group> and the first input of its id.
const JobDownsample = "downsample"

// DownsampleJob asks a downsample worker for the 5m version of a raw block or the 1h version
// of a 5m block. It is published on blockflow.job.downsample.<group> with its ID as the
// Nats-Msg-Id, so planning the same job twice queues it once.
type DownsampleJob struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	// Group is the input's compaction group, "<resolution>@<hash of external labels>".
	Group string      `json:"group"`
	Input BlockRecord `json:"input"`
	// Resolution is the output's, in milliseconds: Res5m or Res1h.
	Resolution int64 `json:"resolution"`
}

// Validate reports the first problem that makes the job unusable.
func (j DownsampleJob) Validate() error {
	switch {
	case j.Version != Version:
		return fmt.Errorf("unsupported job version %d (want %d)", j.Version, Version)
	case j.Group == "":
		return errors.New("group is empty")
	case j.Resolution != Res5m && j.Resolution != Res1h:
		return fmt.Errorf("resolution %d is neither 5m nor 1h", j.Resolution)
	case j.Resolution == Res5m && j.Input.Resolution != ResRaw:
		return fmt.Errorf("5m blocks are made from raw blocks, not resolution %d", j.Input.Resolution)
	case j.Resolution == Res1h && j.Input.Resolution != Res5m:
		return fmt.Errorf("1h blocks are made from 5m blocks, not resolution %d", j.Input.Resolution)
	}
	if err := j.Input.Validate(); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	if want := DownsampleJobID(j.Input.ULID, j.Resolution); j.ID != want {
		return fmt.Errorf("id %q does not match the job (want %q)", j.ID, want)
	}
	return nil
}

// DownsampleJobID is the id of the job that downsamples block input to resolution: the hex
// SHA-256 (first 16 bytes) of the job kind, the input and the resolution, the same whoever
// plans it.
func DownsampleJobID(input ulid.ULID, resolution int64) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d\n", JobDownsample, input, resolution)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// DownsampleOutputULID is the ULID of the block that downsampling input to resolution
// writes. Its time part is the input's and its entropy comes from the job id, so every
// delivery of the job writes the same objects and a crash can never leave two outputs.
func DownsampleOutputULID(input ulid.ULID, resolution int64) ulid.ULID {
	// It cannot fail: the time comes from a valid ULID.
	id, _ := outputULID(input.Time(), DownsampleJobID(input, resolution))
	return id
}

// OutputULID is the ULID of the job's output block.
func (j DownsampleJob) OutputULID() ulid.ULID {
	return DownsampleOutputULID(j.Input.ULID, j.Resolution)
}

// BlockDownsampled says a downsampled block is committed to the bucket and catalogued. It is
// published on blockflow.block.downsampled.<group>.<ulid of the new block>.
type BlockDownsampled struct {
	Version int `json:"version"`
	// Input is the block it was made from; it stays in the bucket.
	Input  ulid.ULID   `json:"input"`
	Record BlockRecord `json:"record"`
}

// Validate reports the first problem that makes the event unusable.
func (e BlockDownsampled) Validate() error {
	switch {
	case e.Version != Version:
		return fmt.Errorf("unsupported event version %d (want %d)", e.Version, Version)
	case e.Input == (ulid.ULID{}):
		return errors.New("input ulid is empty")
	case e.Record.Resolution != Res5m && e.Record.Resolution != Res1h:
		return fmt.Errorf("resolution %d is neither 5m nor 1h", e.Record.Resolution)
	}
	return e.Record.Validate()
}
