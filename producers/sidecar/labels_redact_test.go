package sidecar

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestExternalLabelErrorsHidePasswords: a Prometheus URL with credentials never reaches
// an error (which is logged and, through the StoreAPI's Info, sent to clients) in full.
func TestExternalLabelErrorsHidePasswords(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer srv.Close()
	withCreds := strings.Replace(srv.URL, "http://", "http://admin:s3cret@", 1)
	for _, u := range []string{withCreds + "/api/v1/status/config", "http://admin:s3cret@[::1:bad/api/v1/status/config"} {
		_, err := getExternalLabels(context.Background(), srv.Client(), u)
		if err == nil {
			t.Fatalf("%s: no error", u)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
