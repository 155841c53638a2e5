package promref

import (
	"strings"
	"testing"
	"time"
)

func ok(body string) Answer { return Answer{Code: 200, Body: []byte(body)} }

func TestDiff(t *testing.T) {
	at := time.Unix(1704067200, 0)
	instant := Instant("up", at)
	matrix := Range("rate(x[5m])", at, at.Add(time.Minute), time.Minute)
	const vec = `{"status":"success","data":{"resultType":"vector","result":[
		{"metric":{"__name__":"up","job":"a"},"value":[1704067200,"1"]},
		{"metric":{"__name__":"up","job":"b"},"value":[1704067200,"0"]}]}}`
	const mat = `{"status":"success","data":{"resultType":"matrix","result":[
		{"metric":{"job":"a"},"values":[[1704067200,"0.5"],[1704067260,"0.25"]]}]}}`
	tests := []struct {
		name     string
		q        Query
		ref, got Answer
		drop     []string
		want     []string // substrings of the diff; none: equal
	}{
		{name: "same", q: instant, ref: ok(vec), got: ok(vec)},
		{
			name: "series order and timestamp spelling do not matter", q: instant, ref: ok(vec),
			got: ok(`{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"job":"b","__name__":"up"},"value":[1704067200.000,"0"]},
				{"metric":{"__name__":"up","job":"a"},"value":[1704067200,"1"]}]}}`),
		},
		{
			name: "external labels dropped", q: instant, ref: ok(vec), drop: []string{"cluster", "replica"},
			got: ok(`{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"__name__":"up","job":"a","cluster":"e2e","replica":"a"},"value":[1704067200,"1"]},
				{"metric":{"__name__":"up","job":"b","cluster":"e2e","replica":"a"},"value":[1704067200,"0"]}]}}`),
		},
		{
			name: "external labels kept", q: instant, ref: ok(vec),
			got: ok(`{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"__name__":"up","job":"a","cluster":"e2e"},"value":[1704067200,"1"]},
				{"metric":{"__name__":"up","job":"b","cluster":"e2e"},"value":[1704067200,"0"]}]}}`),
			want: []string{`- {__name__="up", job="a"} @1704067200 "1"`, `+ {__name__="up", cluster="e2e", job="a"} @1704067200 "1"`},
		},
		{
			name: "value string differs", q: matrix, ref: ok(mat),
			got:  ok(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"a"},"values":[[1704067200,"0.5"],[1704067260,"0.250"]]}]}}`),
			want: []string{`- {job="a"} @1704067260 "0.25"`, `+ {job="a"} @1704067260 "0.250"`, "1 of 2 result lines"},
		},
		{
			name: "missing series", q: instant, ref: ok(vec),
			got:  ok(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1704067200,"1"]}]}}`),
			want: []string{`- {__name__="up", job="b"} @1704067200 "0"`},
		},
		{
			name: "result type", q: instant, ref: ok(vec),
			got:  ok(`{"status":"success","data":{"resultType":"scalar","result":[1704067200,"1"]}}`),
			want: []string{`resultType: "vector" != "scalar"`, `+  @1704067200 "1"`},
		},
		{
			name: "warnings presence", q: instant, ref: ok(vec),
			got:  ok(strings.Replace(vec, `{"status":"success",`, `{"status":"success","warnings":["partial"],`, 1)),
			want: []string{`warnings: "absent" != "present: partial"`},
		},
		{
			name: "infos presence", q: instant,
			ref:  ok(strings.Replace(vec, `{"status":"success",`, `{"status":"success","infos":["PromQL info: not a counter"],`, 1)),
			got:  ok(vec),
			want: []string{`infos:`},
		},
		{
			name: "same error type, other words", q: instant,
			ref: Answer{400, []byte(`{"status":"error","errorType":"bad_data","error":"1:3: parse error"}`)},
			got: Answer{400, []byte(`{"status":"error","errorType":"bad_data","error":"invalid expression"}`)},
		},
		{
			name: "error against success", q: instant, ref: ok(vec),
			got:  Answer{422, []byte(`{"status":"error","errorType":"execution","error":"boom"}`)},
			want: []string{`HTTP status: "200" != "422"`, `errorType: "" != "execution"`, `"boom"`},
		},
		{
			name: "label names without external labels", q: LabelNames(), drop: []string{"cluster"},
			ref: ok(`{"status":"success","data":["__name__","job"]}`),
			got: ok(`{"status":"success","data":["__name__","cluster","job"]}`),
		},
		{
			name: "label values", q: LabelValues("status"),
			ref:  ok(`{"status":"success","data":["200","500"]}`),
			got:  ok(`{"status":"success","data":["200"]}`),
			want: []string{`- 500`},
		},
		{
			name: "series", q: Series(at, at, "up"), drop: []string{"replica"},
			ref: ok(`{"status":"success","data":[{"__name__":"up","job":"a"}]}`),
			got: ok(`{"status":"success","data":[{"__name__":"up","job":"a","replica":"x"}]}`),
		},
		{
			name: "native histogram", q: instant,
			ref:  ok(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"2","sum":"3"}]}]}}`),
			got:  ok(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"2","sum":"4"}]}]}}`),
			want: []string{`- {} @1 {"count":"2","sum":"3"}`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			diff, err := Diff(tc.q, tc.ref, tc.got, tc.drop...)
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.want) == 0 && diff != "" {
				t.Fatalf("want no difference, got:\n%s", diff)
			}
			if len(tc.want) > 0 && diff == "" {
				t.Fatal("want a difference, got none")
			}
			for _, w := range tc.want {
				if !strings.Contains(diff, w) {
					t.Errorf("diff lacks %q:\n%s", w, diff)
				}
			}
		})
	}
}

func TestDiffRejectsNonAPIAnswers(t *testing.T) {
	_, err := Diff(Instant("up", time.Unix(0, 0)), Answer{502, []byte("<html>bad gateway</html>")}, ok(`{"status":"success"}`))
	if err == nil || !strings.Contains(err.Error(), "reference answer") {
		t.Fatalf("err = %v, want a reference answer error", err)
	}
}

func TestQueryString(t *testing.T) {
	at := time.UnixMilli(1704067200500)
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Instant("up", at), "/api/v1/query?query=up&time=1704067200.5"},
		{Range("up", at, at.Add(time.Hour), 90*time.Second), "/api/v1/query_range?end=1704070800.5&query=up&start=1704067200.5&step=90"},
		{LabelNames(), "/api/v1/labels"},
		{LabelValues("status", `{job="a"}`), "/api/v1/label/status/values?match%5B%5D=%7Bjob%3D%22a%22%7D"},
	} {
		if got := tc.q.String(); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
	}
}
