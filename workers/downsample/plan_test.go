package downsample

import (
	"reflect"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
)

func TestPlan(t *testing.T) {
	const h = int64(3600 * 1000)
	id := func(n byte) ulid.ULID {
		var u ulid.ULID
		u[0], u[15] = 1, n
		return u
	}
	rec := func(n byte, res, span int64, sources ...byte) schemas.BlockRecord {
		r := schemas.BlockRecord{
			Version: schemas.Version, ULID: id(n), MinTime: 0, MaxTime: span, Resolution: res,
			Labels: map[string]string{"cluster": "a"}, State: schemas.StateLive, Level: 3,
		}
		for _, s := range sources {
			r.Sources = append(r.Sources, id(s))
		}
		return r
	}
	with := func(r schemas.BlockRecord, edit func(*schemas.BlockRecord)) schemas.BlockRecord {
		edit(&r)
		return r
	}
	type want struct {
		input byte
		res   int64
	}
	for _, tc := range []struct {
		name    string
		records []schemas.BlockRecord
		want    []want
	}{
		{"2d raw block", []schemas.BlockRecord{rec(1, 0, 48*h, 10, 11)}, []want{{1, schemas.Res5m}}},
		{"exactly 40h", []schemas.BlockRecord{rec(1, 0, 40*h, 10)}, []want{{1, schemas.Res5m}}},
		{"shorter than 40h", []schemas.BlockRecord{rec(1, 0, 40*h-1, 10)}, nil},
		{"marked for deletion", []schemas.BlockRecord{with(rec(1, 0, 48*h, 10), func(r *schemas.BlockRecord) { r.State = schemas.StateMarked })}, nil},
		{"no-downsample mark", []schemas.BlockRecord{with(rec(1, 0, 48*h, 10), func(r *schemas.BlockRecord) { r.NoDownsample = "manual" })}, nil},
		{
			"sources covered by the union of 5m blocks",
			[]schemas.BlockRecord{rec(1, 0, 48*h, 10, 11), rec(2, schemas.Res5m, 8*h, 10), rec(3, schemas.Res5m, 8*h, 11, 12)},
			nil,
		},
		{
			"sources covered by a 5m block marked for deletion",
			[]schemas.BlockRecord{rec(1, 0, 48*h, 10), with(rec(2, schemas.Res5m, 48*h, 10), func(r *schemas.BlockRecord) { r.State = schemas.StateMarked })},
			nil,
		},
		{
			"a deleted 5m block covers nothing",
			[]schemas.BlockRecord{rec(1, 0, 48*h, 10), with(rec(2, schemas.Res5m, 48*h, 10), func(r *schemas.BlockRecord) { r.State = schemas.StateDeleted })},
			[]want{{1, schemas.Res5m}},
		},
		{
			"partly covered",
			[]schemas.BlockRecord{rec(1, 0, 48*h, 10, 11), rec(2, schemas.Res5m, 48*h, 10)},
			[]want{{1, schemas.Res5m}},
		},
		{"a 5m block covers raw sources, not 1h ones", []schemas.BlockRecord{rec(1, schemas.Res5m, 240*h, 10), rec(2, 0, 240*h, 10)}, []want{{1, schemas.Res1h}}},
		{"14d 5m block", []schemas.BlockRecord{rec(1, schemas.Res5m, 336*h, 10)}, []want{{1, schemas.Res1h}}},
		{"5m block shorter than 10d", []schemas.BlockRecord{rec(1, schemas.Res5m, 240*h-1, 10)}, nil},
		{"covered by 1h", []schemas.BlockRecord{rec(1, schemas.Res5m, 336*h, 10), rec(2, schemas.Res1h, 336*h, 10)}, nil},
		{"1h blocks are final", []schemas.BlockRecord{rec(1, schemas.Res1h, 3360*h, 10)}, nil},
		{"in ULID order", []schemas.BlockRecord{rec(3, 0, 48*h, 30), rec(1, 0, 48*h, 10), rec(2, schemas.Res5m, 336*h, 20)}, []want{{1, schemas.Res5m}, {2, schemas.Res1h}, {3, schemas.Res5m}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs := Plan(tc.records)
			var got []want
			for _, j := range jobs {
				got = append(got, want{j.Input.ULID[15], j.Resolution})
				if err := j.Validate(); err != nil {
					t.Errorf("job %+v: %v", j, err)
				}
				if j.Group != GroupKey(j.Input) {
					t.Errorf("group %q", j.Group)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGroupKey(t *testing.T) {
	r := schemas.BlockRecord{Resolution: schemas.Res5m, Labels: map[string]string{"b": "2", "a": "1"}}
	same := schemas.BlockRecord{Resolution: schemas.Res5m, Labels: map[string]string{"a": "1", "b": "2"}}
	other := schemas.BlockRecord{Resolution: schemas.ResRaw, Labels: same.Labels}
	if GroupKey(r) != GroupKey(same) || GroupKey(r) == GroupKey(other) || GroupKey(r)[:7] != "300000@" {
		t.Errorf("keys %q %q %q", GroupKey(r), GroupKey(same), GroupKey(other))
	}
}
