package schemas

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestJSONSchemasMatchTypes keeps the published JSON Schemas and the Go types in step: every
// JSON field of the type is a schema property and the other way round, and the schema's
// required list is exactly the fields without omitempty.
func TestJSONSchemasMatchTypes(t *testing.T) {
	for _, tc := range []struct {
		file string
		typ  any
	}{
		{"block-ready.v1.schema.json", BlockReady{}},
		{"block-record.v1.schema.json", BlockRecord{}},
		{"block-uploaded.v1.schema.json", BlockUploaded{}},
		{"compact-job.v1.schema.json", CompactJob{}},
		{"downsample-job.v1.schema.json", DownsampleJob{}},
		{"block-compacted.v1.schema.json", BlockCompacted{}},
		{"block-state-changed.v1.schema.json", BlockStateChanged{}},
		{"block-downsampled.v1.schema.json", BlockDownsampled{}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			var schema struct {
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			}
			if err := json.Unmarshal(data, &schema); err != nil {
				t.Fatalf("parse %s: %v", tc.file, err)
			}
			var fields, required []string
			rt := reflect.TypeOf(tc.typ)
			for i := range rt.NumField() {
				name, opts, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
				fields = append(fields, name)
				if opts != "omitempty" {
					required = append(required, name)
				}
			}
			var props []string
			for p := range schema.Properties {
				props = append(props, p)
			}
			slices.Sort(fields)
			slices.Sort(props)
			slices.Sort(required)
			slices.Sort(schema.Required)
			if !slices.Equal(fields, props) {
				t.Errorf("properties %v, Go fields %v", props, fields)
			}
			if !slices.Equal(required, schema.Required) {
				t.Errorf("required %v, Go fields without omitempty %v", schema.Required, required)
			}
		})
	}
}

func TestDecodeRejectsBadEvents(t *testing.T) {
	good := `{"version":1,"site":"s","ulid":"01HZZZZZZZZZZZZZZZZZZZZZZZ","min_time":0,"max_time":7200000,
		"labels":{"cluster":"a"},"files":[{"rel_path":"meta.json","size_bytes":1},{"rel_path":"index","size_bytes":1},
		{"rel_path":"chunks/000001","size_bytes":1}],"producer":"sidecar"}`
	if _, err := Decode[BlockReady]([]byte(good)); err != nil {
		t.Fatalf("good event rejected: %v", err)
	}
	for name, in := range map[string]string{
		"not json":      `{`,
		"wrong version": strings.Replace(good, `"version":1`, `"version":2`, 1),
		"no labels":     strings.Replace(good, `{"cluster":"a"}`, `{}`, 1),
		"empty range":   strings.Replace(good, `"max_time":7200000`, `"max_time":0`, 1),
		"no index":      strings.Replace(good, `"index"`, `"other"`, 1),
		"no site":       strings.Replace(good, `"site":"s"`, `"site":""`, 1),
	} {
		if _, err := Decode[BlockReady]([]byte(in)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
