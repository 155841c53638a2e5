package block

import "testing"

func TestIsBlockFile(t *testing.T) {
	for rel, want := range map[string]bool{
		"meta.json": true, "index": true, "chunks/000001": true, "chunks/123456": true,
		"tombstones": false, "chunks/1": false, "chunks/000001/x": false, "../index": false,
		"deletion-mark.json": false, "": false,
	} {
		if got := IsBlockFile(rel); got != want {
			t.Errorf("IsBlockFile(%q) = %v, want %v", rel, got, want)
		}
	}
}
