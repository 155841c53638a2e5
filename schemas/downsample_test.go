package schemas

import (
	"encoding/json"
	"testing"

	"github.com/oklog/ulid/v2"
)

func TestDownsampleJobValidate(t *testing.T) {
	in := ulid.MustParse("01HKZ0000000000000000000AA")
	valid := DownsampleJob{
		Version: Version, ID: DownsampleJobID(in, Res5m), Group: "0@123", Resolution: Res5m,
		Input: BlockRecord{Version: Version, ULID: in, MinTime: 0, MaxTime: 10, State: StateLive},
	}
	if err := valid.Validate(); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(valid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode[DownsampleJob](data); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	for name, edit := range map[string]func(*DownsampleJob){
		"version":         func(j *DownsampleJob) { j.Version = 2 },
		"group":           func(j *DownsampleJob) { j.Group = "" },
		"resolution":      func(j *DownsampleJob) { j.Resolution = 60_000 },
		"5m from 5m":      func(j *DownsampleJob) { j.Input.Resolution = Res5m },
		"1h from raw":     func(j *DownsampleJob) { j.Resolution, j.ID = Res1h, DownsampleJobID(in, Res1h) },
		"forged id":       func(j *DownsampleJob) { j.ID = "x" },
		"invalid input":   func(j *DownsampleJob) { j.Input.MaxTime = 0 },
		"id of other res": func(j *DownsampleJob) { j.ID = DownsampleJobID(in, Res1h) },
	} {
		j := valid
		edit(&j)
		if err := j.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, j)
		}
	}
	if DownsampleJobID(in, Res5m) == DownsampleJobID(in, Res1h) {
		t.Error("job ids do not depend on the resolution")
	}
}

func TestBlockDownsampledValidate(t *testing.T) {
	id := ulid.MustParse("01HKZ0000000000000000000AB")
	ev := BlockDownsampled{
		Version: Version, Input: ulid.MustParse("01HKZ0000000000000000000AA"),
		Record: BlockRecord{Version: Version, ULID: id, MaxTime: 1, Resolution: Res5m, State: StateLive},
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	raw := ev
	raw.Record.Resolution = ResRaw
	noInput := ev
	noInput.Input = ulid.ULID{}
	for _, bad := range []BlockDownsampled{raw, noInput} {
		if bad.Validate() == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestDownsampleOutputULID(t *testing.T) {
	a, b := ulid.MustParse("01HKZ0000000000000000000AA"), ulid.MustParse("01HKZ0000000000000000000AB")
	ids := map[ulid.ULID]bool{}
	for _, in := range []ulid.ULID{a, b} {
		for _, res := range []int64{Res5m, Res1h} {
			id := DownsampleOutputULID(in, res)
			job := DownsampleJob{Input: BlockRecord{ULID: in}, Resolution: res}
			if id != DownsampleOutputULID(in, res) || id != job.OutputULID() {
				t.Fatal("not deterministic")
			}
			if id.Time() != in.Time() {
				t.Errorf("time %d, input's %d", id.Time(), in.Time())
			}
			ids[id] = true
		}
	}
	if len(ids) != 4 {
		t.Errorf("%d distinct ids for 4 (input, resolution) pairs", len(ids))
	}
}
