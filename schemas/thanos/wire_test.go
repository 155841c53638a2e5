// Package thanos_test pins the StoreAPI wire contract (reference/thanos.md §2.2–2.4):
// proto package, message and field names, field numbers, types and enum values. A change
// to the .proto files that breaks compatibility with Thanos fails here.
package thanos_test

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/blockflow/blockflow/schemas/thanos/info/infopb"
	_ "github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

type field struct {
	number   protoreflect.FieldNumber
	name     string
	kind     protoreflect.Kind
	repeated bool
	typ      string // full name of the message or enum type, if any
}

var (
	i64  = protoreflect.Int64Kind
	str  = protoreflect.StringKind
	bol  = protoreflect.BoolKind
	msg  = protoreflect.MessageKind
	enm  = protoreflect.EnumKind
	byts = protoreflect.BytesKind
)

var messages = map[protoreflect.FullName][]field{
	"thanos.Label":     {{1, "name", str, false, ""}, {2, "value", str, false, ""}},
	"thanos.LabelSet":  {{1, "labels", msg, true, "thanos.Label"}},
	"thanos.ZLabelSet": {{1, "labels", msg, true, "thanos.Label"}},
	"thanos.LabelMatcher": {
		{1, "type", enm, false, "thanos.LabelMatcher.Type"}, {2, "name", str, false, ""}, {3, "value", str, false, ""},
	},
	"thanos.Chunk": {
		{1, "type", enm, false, "thanos.Chunk.Encoding"}, {2, "data", byts, false, ""}, {3, "hash", protoreflect.Uint64Kind, false, ""},
	},
	"thanos.AggrChunk": {
		{1, "min_time", i64, false, ""}, {2, "max_time", i64, false, ""},
		{3, "raw", msg, false, "thanos.Chunk"}, {4, "count", msg, false, "thanos.Chunk"}, {5, "sum", msg, false, "thanos.Chunk"},
		{6, "min", msg, false, "thanos.Chunk"}, {7, "max", msg, false, "thanos.Chunk"}, {8, "counter", msg, false, "thanos.Chunk"},
	},
	"thanos.Series":      {{1, "labels", msg, true, "thanos.Label"}, {2, "chunks", msg, true, "thanos.AggrChunk"}},
	"thanos.SeriesBatch": {{1, "series", msg, true, "thanos.Series"}},
	"thanos.SeriesRequest": {
		{1, "min_time", i64, false, ""}, {2, "max_time", i64, false, ""},
		{3, "matchers", msg, true, "thanos.LabelMatcher"},
		{4, "max_resolution_window", i64, false, ""}, {5, "aggregates", enm, true, "thanos.Aggr"},
		{6, "partial_response_disabled", bol, false, ""},
		{7, "partial_response_strategy", enm, false, "thanos.PartialResponseStrategy"},
		{8, "skip_chunks", bol, false, ""}, {9, "hints", msg, false, "google.protobuf.Any"},
		{10, "step", i64, false, ""}, {11, "range", i64, false, ""},
		{12, "query_hints", msg, false, "thanos.QueryHints"}, {13, "shard_info", msg, false, "thanos.ShardInfo"},
		{14, "without_replica_labels", str, true, ""}, {15, "limit", i64, false, ""}, {16, "response_batch_size", i64, false, ""},
	},
	"thanos.QueryHints": {
		{1, "step_millis", i64, false, ""}, {2, "func", msg, false, "thanos.Func"}, {4, "grouping", msg, false, "thanos.Grouping"},
		{5, "range", msg, false, "thanos.Range"}, {6, "projection_labels", str, true, ""}, {7, "projection_include", bol, false, ""},
		{8, "series_hash_label_name", str, false, ""},
	},
	"thanos.ShardInfo": {
		{1, "shard_index", i64, false, ""}, {2, "total_shards", i64, false, ""}, {3, "by", bol, false, ""}, {4, "labels", str, true, ""},
	},
	"thanos.Func":     {{1, "name", str, false, ""}},
	"thanos.Grouping": {{1, "by", bol, false, ""}, {3, "labels", str, true, ""}},
	"thanos.Range":    {{1, "millis", i64, false, ""}},
	"thanos.SeriesResponse": {
		{1, "series", msg, false, "thanos.Series"}, {2, "warning", str, false, ""},
		{3, "hints", msg, false, "google.protobuf.Any"}, {4, "batch", msg, false, "thanos.SeriesBatch"},
	},
	"thanos.LabelNamesRequest": {
		{1, "partial_response_disabled", bol, false, ""}, {2, "partial_response_strategy", enm, false, "thanos.PartialResponseStrategy"},
		{3, "start", i64, false, ""}, {4, "end", i64, false, ""}, {5, "hints", msg, false, "google.protobuf.Any"},
		{6, "matchers", msg, true, "thanos.LabelMatcher"}, {7, "without_replica_labels", str, true, ""}, {8, "limit", i64, false, ""},
	},
	"thanos.LabelNamesResponse": {
		{1, "names", str, true, ""}, {2, "warnings", str, true, ""}, {3, "hints", msg, false, "google.protobuf.Any"},
	},
	"thanos.LabelValuesRequest": {
		{1, "label", str, false, ""}, {2, "partial_response_disabled", bol, false, ""},
		{3, "partial_response_strategy", enm, false, "thanos.PartialResponseStrategy"},
		{4, "start", i64, false, ""}, {5, "end", i64, false, ""}, {6, "hints", msg, false, "google.protobuf.Any"},
		{7, "matchers", msg, true, "thanos.LabelMatcher"}, {8, "without_replica_labels", str, true, ""}, {9, "limit", i64, false, ""},
	},
	"thanos.LabelValuesResponse": {
		{1, "values", str, true, ""}, {2, "warnings", str, true, ""}, {3, "hints", msg, false, "google.protobuf.Any"},
	},
	"thanos.InfoRequest": {},
	"thanos.InfoResponse": {
		{1, "labels", msg, true, "thanos.Label"}, {2, "min_time", i64, false, ""}, {3, "max_time", i64, false, ""},
		{4, "storeType", enm, false, "thanos.StoreType"}, {5, "label_sets", msg, true, "thanos.LabelSet"},
	},
	"thanos.info.InfoRequest": {},
	"thanos.info.InfoResponse": {
		{1, "label_sets", msg, true, "thanos.ZLabelSet"}, {2, "ComponentType", str, false, ""},
		{3, "store", msg, false, "thanos.info.StoreInfo"}, {4, "rules", msg, false, "thanos.info.RulesInfo"},
		{5, "metric_metadata", msg, false, "thanos.info.MetricMetadataInfo"}, {6, "targets", msg, false, "thanos.info.TargetsInfo"},
		{7, "exemplars", msg, false, "thanos.info.ExemplarsInfo"}, {8, "query", msg, false, "thanos.info.QueryAPIInfo"},
		{9, "status", msg, false, "thanos.info.StatusInfo"},
	},
	"thanos.info.StoreInfo": {
		{1, "min_time", i64, false, ""}, {2, "max_time", i64, false, ""}, {3, "supports_sharding", bol, false, ""},
		{5, "supports_without_replica_labels", bol, false, ""}, {6, "tsdb_infos", msg, true, "thanos.info.TSDBInfo"},
		{7, "supports_projections", bol, false, ""},
	},
	"thanos.info.TSDBInfo": {
		{1, "labels", msg, false, "thanos.ZLabelSet"}, {2, "min_time", i64, false, ""}, {3, "max_time", i64, false, ""},
	},
	"thanos.info.RulesInfo":          {},
	"thanos.info.MetricMetadataInfo": {},
	"thanos.info.TargetsInfo":        {},
	"thanos.info.ExemplarsInfo":      {{1, "min_time", i64, false, ""}, {2, "max_time", i64, false, ""}},
	"thanos.info.QueryAPIInfo":       {},
	"thanos.info.StatusInfo":         {},
}

var enums = map[protoreflect.FullName]map[string]protoreflect.EnumNumber{
	"thanos.LabelMatcher.Type":       {"EQ": 0, "NEQ": 1, "RE": 2, "NRE": 3},
	"thanos.Chunk.Encoding":          {"XOR": 0, "HISTOGRAM": 1, "FLOAT_HISTOGRAM": 2},
	"thanos.Aggr":                    {"RAW": 0, "COUNT": 1, "SUM": 2, "MIN": 3, "MAX": 4, "COUNTER": 5},
	"thanos.PartialResponseStrategy": {"WARN": 0, "ABORT": 1},
	"thanos.StoreType":               {"UNKNOWN": 0, "QUERY": 1, "RULE": 2, "SIDECAR": 3, "STORE": 4, "RECEIVE": 5, "DEBUG": 6},
}

func TestMessages(t *testing.T) {
	for name, want := range messages {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("message %s: %v", name, err)
			continue
		}
		md := d.(protoreflect.MessageDescriptor)
		if md.Fields().Len() != len(want) {
			t.Errorf("%s has %d fields, want %d", name, md.Fields().Len(), len(want))
		}
		for _, f := range want {
			fd := md.Fields().ByNumber(f.number)
			if fd == nil {
				t.Errorf("%s: no field %d (%s)", name, f.number, f.name)
				continue
			}
			if string(fd.Name()) != f.name || fd.Kind() != f.kind || fd.IsList() != f.repeated {
				t.Errorf("%s field %d: %s %v repeated=%v, want %s %v repeated=%v", name, f.number, fd.Name(), fd.Kind(), fd.IsList(), f.name, f.kind, f.repeated)
			}
			var typ protoreflect.FullName
			switch {
			case fd.Message() != nil:
				typ = fd.Message().FullName()
			case fd.Enum() != nil:
				typ = fd.Enum().FullName()
			}
			if string(typ) != f.typ {
				t.Errorf("%s field %s: type %s, want %s", name, f.name, typ, f.typ)
			}
		}
	}
	store, _ := protoregistry.GlobalFiles.FindDescriptorByName("thanos.info.StoreInfo")
	if r := store.(protoreflect.MessageDescriptor).ReservedRanges(); r.Len() != 1 || !r.Has(4) {
		t.Errorf("thanos.info.StoreInfo: field 4 must be reserved")
	}
	resp, _ := protoregistry.GlobalFiles.FindDescriptorByName("thanos.SeriesResponse")
	if oo := resp.(protoreflect.MessageDescriptor).Oneofs(); oo.Len() != 1 || oo.Get(0).Name() != "result" || oo.Get(0).Fields().Len() != 4 {
		t.Errorf("thanos.SeriesResponse: want oneof result of 4 fields")
	}
}

func TestEnums(t *testing.T) {
	for name, want := range enums {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("enum %s: %v", name, err)
			continue
		}
		vals := d.(protoreflect.EnumDescriptor).Values()
		if vals.Len() != len(want) {
			t.Errorf("%s has %d values, want %d", name, vals.Len(), len(want))
		}
		for v, n := range want {
			if ev := vals.ByName(protoreflect.Name(v)); ev == nil || ev.Number() != n {
				t.Errorf("%s.%s: want %d", name, v, n)
			}
		}
	}
}

func TestServices(t *testing.T) {
	for _, tc := range []struct {
		service protoreflect.FullName
		methods map[string][3]string // name -> input, output, "stream" for server streaming
	}{
		{"thanos.Store", map[string][3]string{
			"Info":        {"thanos.InfoRequest", "thanos.InfoResponse", ""},
			"Series":      {"thanos.SeriesRequest", "thanos.SeriesResponse", "stream"},
			"LabelNames":  {"thanos.LabelNamesRequest", "thanos.LabelNamesResponse", ""},
			"LabelValues": {"thanos.LabelValuesRequest", "thanos.LabelValuesResponse", ""},
		}},
		{"thanos.info.Info", map[string][3]string{
			"Info": {"thanos.info.InfoRequest", "thanos.info.InfoResponse", ""},
		}},
	} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(tc.service)
		if err != nil {
			t.Fatalf("service %s: %v", tc.service, err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		if sd.Methods().Len() != len(tc.methods) {
			t.Errorf("%s has %d methods, want %d", tc.service, sd.Methods().Len(), len(tc.methods))
		}
		for name, want := range tc.methods {
			md := sd.Methods().ByName(protoreflect.Name(name))
			if md == nil {
				t.Errorf("%s: no method %s", tc.service, name)
				continue
			}
			stream := ""
			if md.IsStreamingServer() {
				stream = "stream"
			}
			got := [3]string{string(md.Input().FullName()), string(md.Output().FullName()), stream}
			if got != want || md.IsStreamingClient() {
				t.Errorf("%s/%s: %v, want %v", tc.service, name, got, want)
			}
		}
	}
}
