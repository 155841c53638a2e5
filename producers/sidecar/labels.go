package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

// errNoLabels is what the sidecar says when nothing gives it external labels: without them
// its blocks would be indistinguishable from every other producer's in the bucket.
var errNoLabels = errors.New("no external labels: set --label k=v or external_labels in Prometheus's global config")

// fetchExternalLabels reads global.external_labels from Prometheus's /api/v1/status/config,
// as the Thanos sidecar does. It retries with backoff until Prometheus answers or ctx ends;
// an answer without external labels is final.
func fetchExternalLabels(ctx context.Context, client *http.Client, baseURL string, log zerolog.Logger) (map[string]string, error) {
	configURL := strings.TrimSuffix(baseURL, "/") + "/api/v1/status/config"
	var lbls map[string]string
	op := func() error {
		l, err := getExternalLabels(ctx, client, configURL)
		if err != nil {
			return err
		}
		if len(l) == 0 {
			return backoff.Permanent(errNoLabels)
		}
		lbls = l
		return nil
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 500 * time.Millisecond
	bo.MaxInterval = 30 * time.Second
	bo.MaxElapsedTime = 0 // until ctx ends: the sidecar is useless without labels
	notify := func(err error, wait time.Duration) {
		log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot read external labels from Prometheus")
	}
	if err := backoff.RetryNotify(op, backoff.WithContext(bo, ctx), notify); err != nil {
		return nil, fmt.Errorf("external labels from %s: %w", redacted(baseURL), err)
	}
	return lbls, nil
}

// redacted is rawURL fit for logs and errors: a password in it is replaced by "xxxxx".
func redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func getExternalLabels(ctx context.Context, client *http.Client, configURL string) (map[string]string, error) {
	shown := redacted(configURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, configURL, nil)
	if err != nil {
		var uerr *url.Error // it would quote the URL, password and all
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, backoff.Permanent(fmt.Errorf("GET %s: %w", shown, err))
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", shown, resp.Status)
	}
	var api struct {
		Status string `json:"status"`
		Data   struct {
			YAML string `json:"yaml"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &api); err != nil {
		return nil, fmt.Errorf("GET %s: decode: %w", shown, err)
	}
	if api.Status != "success" {
		return nil, fmt.Errorf("GET %s: status %q", shown, api.Status)
	}
	var cfg struct {
		Global struct {
			ExternalLabels map[string]string `yaml:"external_labels"`
		} `yaml:"global"`
	}
	if err := yaml.Unmarshal([]byte(api.Data.YAML), &cfg); err != nil {
		return nil, backoff.Permanent(fmt.Errorf("parse Prometheus config: %w", err))
	}
	return cfg.Global.ExternalLabels, nil
}
