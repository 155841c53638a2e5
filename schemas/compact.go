package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"
)

// JobCompact is the kind of a compaction job: the fourth token of
// blockflow.job.compact.<group> and the first input of its id.
const JobCompact = "compact"

// Deduplication functions of a compaction job, as Thanos' --deduplication.func names them.
const (
	// DedupNone merges overlapping blocks one to one: samples with the same timestamp are
	// kept once, all others interleaved (Prometheus' vertical compaction).
	DedupNone = ""
	// DedupPenalty merges the blocks of HA replicas with the penalty algorithm of the Thanos
	// querier: one replica's samples, the other's only to fill its gaps.
	DedupPenalty = "penalty"
)

// BlockRef names one input of a job with the time range the planner saw.
type BlockRef struct {
	ULID    ulid.ULID `json:"ulid"`
	MinTime int64     `json:"min_time"`
	MaxTime int64     `json:"max_time"`
}

// CompactJob asks a compaction worker to merge Inputs, blocks of one compaction group,
// into one block. It is published on blockflow.job.compact.<group> with ID as its
// Nats-Msg-Id. Everything in it is a function of the inputs and the planner's settings,
// so planning the same compaction twice yields the same job, and its output the same
// ULID (OutputULID).
type CompactJob struct {
	Version int `json:"version"`
	// ID is CompactJobID(Inputs, Deduplication, ReplicaLabels).
	ID string `json:"id"`
	// Group is the compaction group key, "<resolution>@<hash of Labels>" as in Thanos.
	Group string `json:"group"`
	// Labels are the output's external labels: the inputs' labels without ReplicaLabels.
	Labels     map[string]string `json:"labels"`
	Resolution int64             `json:"resolution"`
	// Inputs are sorted by MinTime, then ULID.
	Inputs []BlockRef `json:"inputs"`
	// Deduplication is DedupNone or DedupPenalty.
	Deduplication string `json:"deduplication,omitempty"`
	// ReplicaLabels are the external labels that told replicas apart (informational: they
	// are already gone from Labels).
	ReplicaLabels []string `json:"replica_labels,omitempty"`
}

// Validate reports the first problem that makes the job unusable.
func (j CompactJob) Validate() error {
	switch {
	case j.Version != Version:
		return fmt.Errorf("unsupported job version %d (want %d)", j.Version, Version)
	case j.Group == "":
		return errors.New("group is empty")
	case len(j.Labels) == 0:
		return errors.New("external labels are empty")
	case len(j.Inputs) < 2:
		return fmt.Errorf("%d inputs: a compaction needs at least 2", len(j.Inputs))
	case j.Deduplication != DedupNone && j.Deduplication != DedupPenalty:
		return fmt.Errorf("unknown deduplication %q", j.Deduplication)
	}
	seen := make(map[ulid.ULID]bool, len(j.Inputs))
	for i, in := range j.Inputs {
		switch {
		case in.ULID == (ulid.ULID{}):
			return fmt.Errorf("input %d has no ulid", i)
		case seen[in.ULID]:
			return fmt.Errorf("input %s listed twice", in.ULID)
		case in.MaxTime <= in.MinTime:
			return fmt.Errorf("input %s: time range [%d, %d) is empty", in.ULID, in.MinTime, in.MaxTime)
		case i > 0 && compareRefs(j.Inputs[i-1], in) > 0:
			return fmt.Errorf("input %s is out of order", in.ULID)
		}
		seen[in.ULID] = true
	}
	if want := CompactJobID(j.Inputs, j.Deduplication, j.ReplicaLabels); j.ID != want {
		return fmt.Errorf("id %q does not match the inputs (want %q)", j.ID, want)
	}
	return nil
}

// SortRefs sorts inputs as a job lists them: by MinTime, then ULID.
func SortRefs(refs []BlockRef) { slices.SortFunc(refs, compareRefs) }

func compareRefs(a, b BlockRef) int {
	if a.MinTime != b.MinTime {
		if a.MinTime < b.MinTime {
			return -1
		}
		return 1
	}
	return a.ULID.Compare(b.ULID)
}

// CompactJobID is the id of the compaction of inputs: the hex SHA-256 (first 16 bytes) of
// the job kind, the sorted input ULIDs and the deduplication settings.
func CompactJobID(inputs []BlockRef, dedup string, replicaLabels []string) string {
	ids := make([]string, 0, len(inputs))
	for _, in := range inputs {
		ids = append(ids, in.ULID.String())
	}
	slices.Sort(ids)
	labels := slices.Clone(replicaLabels)
	slices.Sort(labels)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", JobCompact, strings.Join(ids, ","), dedup, strings.Join(labels, ","))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// OutputULID is the ULID of the job's output block. Its time part is the newest input
// ULID's (the output is made of nothing newer) and its entropy comes from the job id, so
// every delivery of the job writes the same objects and a crash can never leave two
// outputs.
func (j CompactJob) OutputULID() (ulid.ULID, error) {
	var newest uint64
	for _, in := range j.Inputs {
		newest = max(newest, in.ULID.Time())
	}
	id, err := outputULID(newest, j.ID)
	if err != nil {
		return id, fmt.Errorf("job %s: output ulid: %w", j.ID, err)
	}
	return id, nil
}

// outputULID is the ULID of a job's output: ms is its time part, and its entropy comes from
// the job id, so that every delivery of the job names the same block.
func outputULID(ms uint64, jobID string) (ulid.ULID, error) {
	sum := sha256.Sum256([]byte(jobID))
	var id ulid.ULID
	if err := id.SetTime(ms); err != nil {
		return id, err
	}
	return id, id.SetEntropy(sum[:10])
}

// MinTime and MaxTime are the range the output covers.
func (j CompactJob) MinTime() int64 {
	t := j.Inputs[0].MinTime
	for _, in := range j.Inputs {
		t = min(t, in.MinTime)
	}
	return t
}

// MaxTime is the end of the range the output covers (exclusive).
func (j CompactJob) MaxTime() int64 {
	t := j.Inputs[0].MaxTime
	for _, in := range j.Inputs {
		t = max(t, in.MaxTime)
	}
	return t
}

// BlockCompacted says a compaction committed its output: the block is in the bucket and
// catalogued live, and its inputs are being marked for deletion. It is published on
// blockflow.block.compacted.<group>.<output ulid>.
type BlockCompacted struct {
	Version int         `json:"version"`
	JobID   string      `json:"job_id"`
	Record  BlockRecord `json:"record"`
	// Parents are the job's inputs.
	Parents []ulid.ULID `json:"parents"`
}

// Validate reports the first problem that makes the event unusable.
func (e BlockCompacted) Validate() error {
	switch {
	case e.Version != Version:
		return fmt.Errorf("unsupported event version %d (want %d)", e.Version, Version)
	case e.JobID == "":
		return errors.New("job id is empty")
	case len(e.Parents) == 0:
		return errors.New("no parents")
	}
	return e.Record.Validate()
}

// BlockStateChanged says a block was marked for deletion or deleted, and why. It is
// published on blockflow.block.marked.<group>.<ulid> and blockflow.block.deleted.….
type BlockStateChanged struct {
	Version int         `json:"version"`
	Record  BlockRecord `json:"record"`
	Reason  string      `json:"reason"`
}

// Validate reports the first problem that makes the event unusable.
func (e BlockStateChanged) Validate() error {
	if e.Version != Version {
		return fmt.Errorf("unsupported event version %d (want %d)", e.Version, Version)
	}
	return e.Record.Validate()
}
