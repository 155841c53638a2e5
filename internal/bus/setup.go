package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// maxEventSize catches an event that carries data instead of references.
	maxEventSize = 64 << 10
	// maxDeadLetterSize leaves room for the dead-letter headers around an event.
	maxDeadLetterSize = 2 * maxEventSize
	eventsMaxAge      = 30 * 24 * time.Hour
	deadLettersMaxAge = 90 * 24 * time.Hour
	// dedupWindow covers a producer's retries and restarts (Nats-Msg-Id).
	dedupWindow      = time.Hour
	catalogueHistory = 5
)

// setup creates or updates every stream, the catalogue and the staging store. It is
// idempotent: a second call with the same settings changes nothing.
func (b *Bus) setup(ctx context.Context) error {
	replicas := b.replicas
	streams := []jetstream.StreamConfig{
		{
			Name:        StreamEvents,
			Description: "blockflow block events: the replayable log",
			Subjects:    []string{b.Subject("block", ">")},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      eventsMaxAge,
			Duplicates:  dedupWindow,
			MaxMsgSize:  maxEventSize,
			Replicas:    replicas,
		},
		{
			Name:        StreamJobs,
			Description: "blockflow jobs (compaction, downsampling): a work queue",
			Subjects:    []string{b.Subject("job", ">")},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Duplicates:  dedupWindow,
			MaxMsgSize:  maxEventSize,
			Replicas:    replicas,
		},
		{
			Name:        StreamDLQ,
			Description: "blockflow dead letters: events a stage gave up on, with the reason",
			Subjects:    []string{b.Subject("dlq", ">")},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      deadLettersMaxAge,
			Duplicates:  dedupWindow,
			MaxMsgSize:  maxDeadLetterSize,
			Replicas:    replicas,
		},
	}
	for _, cfg := range streams {
		err := b.retryTransient(ctx, "create stream "+cfg.Name, func(ctx context.Context) error {
			_, err := b.js.CreateOrUpdateStream(ctx, cfg)
			return err
		})
		if err != nil {
			return err
		}
	}

	var kv jetstream.KeyValue
	err := b.retryTransient(ctx, "create KV bucket "+CatalogueBucket, func(ctx context.Context) (err error) {
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      CatalogueBucket,
			Description: "blockflow catalogue: the last record of every block, by ULID",
			History:     catalogueHistory,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
		return err
	})
	if err != nil {
		return err
	}
	b.catalogue = &Catalogue{kv: kv, log: b.log, reconnected: b.reconnected}

	var obj jetstream.ObjectStore
	err = b.retryTransient(ctx, "create object store "+StagingBucket, func(ctx context.Context) (err error) {
		obj, err = b.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      StagingBucket,
			Description: "blockflow staging: new blocks' files on their way to the bucket",
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
		return err
	})
	if err != nil {
		return err
	}
	b.staging = &Staging{obj: obj}
	return nil
}
