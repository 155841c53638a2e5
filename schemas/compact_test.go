package schemas_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
)

func testJob() schemas.CompactJob {
	inputs := []schemas.BlockRef{
		{ULID: ulid.MustNew(30, nil), MinTime: 0, MaxTime: 10},
		{ULID: ulid.MustNew(20, nil), MinTime: 10, MaxTime: 20},
	}
	return schemas.CompactJob{
		Version: schemas.Version, ID: schemas.CompactJobID(inputs, schemas.DedupNone, nil),
		Group: "0@1", Labels: map[string]string{"a": "b"}, Inputs: inputs,
	}
}

func TestCompactJobValidate(t *testing.T) {
	if err := testJob().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(*schemas.CompactJob)
		want string
	}{
		{"version", func(j *schemas.CompactJob) { j.Version = 2 }, "version"},
		{"one input", func(j *schemas.CompactJob) { j.Inputs = j.Inputs[:1] }, "at least 2"},
		{"unsorted", func(j *schemas.CompactJob) { j.Inputs[0], j.Inputs[1] = j.Inputs[1], j.Inputs[0] }, "out of order"},
		{"twice", func(j *schemas.CompactJob) { j.Inputs[1].ULID = j.Inputs[0].ULID }, "twice"},
		{"empty range", func(j *schemas.CompactJob) { j.Inputs[1].MaxTime = 10 }, "empty"},
		{"no labels", func(j *schemas.CompactJob) { j.Labels = nil }, "labels"},
		{"dedup", func(j *schemas.CompactJob) { j.Deduplication = "chain" }, "deduplication"},
		{"id of other inputs", func(j *schemas.CompactJob) { j.Inputs[1].ULID = ulid.MustNew(40, nil) }, "does not match"},
		{"id of other settings", func(j *schemas.CompactJob) { j.Deduplication = schemas.DedupPenalty }, "does not match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := testJob()
			j.Inputs = append([]schemas.BlockRef(nil), j.Inputs...)
			c.edit(&j)
			if err := j.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate = %v, want an error about %q", err, c.want)
			}
		})
	}
}

func TestCompactJobIDAndOutput(t *testing.T) {
	j := testJob()
	swapped := []schemas.BlockRef{j.Inputs[1], j.Inputs[0]}
	if schemas.CompactJobID(swapped, "", nil) != j.ID {
		t.Error("the id depends on the order of the inputs")
	}
	if schemas.CompactJobID(j.Inputs, schemas.DedupPenalty, []string{"b", "a"}) != schemas.CompactJobID(j.Inputs, schemas.DedupPenalty, []string{"a", "b"}) {
		t.Error("the id depends on the order of the replica labels")
	}
	out, err := j.OutputULID()
	if err != nil {
		t.Fatal(err)
	}
	// A job that went through JSON (a redelivery) names the same output.
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	again, err := schemas.Decode[schemas.CompactJob](data)
	if err != nil {
		t.Fatal(err)
	}
	if out2, _ := again.OutputULID(); out2 != out {
		t.Errorf("output %s after a round trip, %s before", out2, out)
	}
	if out.Time() != 30 {
		t.Errorf("output ULID time %d, want the newest input's (30)", out.Time())
	}
	if j.MinTime() != 0 || j.MaxTime() != 20 {
		t.Errorf("range [%d, %d), want [0, 20)", j.MinTime(), j.MaxTime())
	}
}
