package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/rs/zerolog"
)

// unknownSizePartSize is the part size of an upload of unknown size unless configured
// (Thanos's default): minio-go would otherwise size parts for a 5 TiB object and buffer
// ~600 MiB per upload.
const unknownSizePartSize = 64 << 20

// S3Config is the `config:` section of a Thanos objstore file with `type: S3`.
// SecretKey and SessionToken are secrets: never log an S3Config.
type S3Config struct {
	Bucket       string `yaml:"bucket"`
	Endpoint     string `yaml:"endpoint"`
	Region       string `yaml:"region"`
	AccessKey    string `yaml:"access_key"`
	SecretKey    string `yaml:"secret_key"`
	SessionToken string `yaml:"session_token"`
	// Insecure talks plain HTTP.
	Insecure bool `yaml:"insecure"`
	// PartSize is the multipart upload part size in bytes. Unset, minio-go picks it for
	// a known size (16 MiB parts, uploaded in parallel), and it is 64 MiB otherwise.
	PartSize uint64 `yaml:"part_size"`
}

func (c S3Config) validate() error {
	switch {
	case c.Bucket == "":
		return errors.New("S3 bucket name is missing (config.bucket)")
	case c.Endpoint == "":
		return errors.New("S3 endpoint is missing (config.endpoint)")
	case c.AccessKey != "" && c.SecretKey == "":
		return errors.New("S3 access_key is set but secret_key is missing")
	case c.AccessKey == "" && c.SecretKey != "":
		return errors.New("S3 secret_key is set but access_key is missing")
	}
	return nil
}

func (c S3Config) scheme() string {
	if c.Insecure {
		return "http"
	}
	return "https"
}

// newClient builds a minio-go client: static keys when given, else the AWS chain that
// Thanos uses (environment, ~/.aws/credentials, EC2/ECS instance role).
func newClient(cfg S3Config) (*minio.Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
		})
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  creds,
		Secure: !cfg.Insecure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client for %s: %w", cfg.Endpoint, err)
	}
	return client, nil
}

// CreateS3Bucket makes the bucket cfg names; an existing bucket is fine. For tests and
// `blockflow dev` against MinIO: production buckets are made by their operators.
func CreateS3Bucket(ctx context.Context, cfg S3Config) error {
	client, err := newClient(cfg)
	if err != nil {
		return err
	}
	if err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
		switch minio.ToErrorResponse(err).Code {
		case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
			return nil
		}
		return fmt.Errorf("create bucket %q at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	return nil
}

type s3Bucket struct {
	client   *minio.Client
	core     minio.Core
	name     string
	partSize uint64 // 0: minio-go's choice
}

// NewS3 connects to cfg's bucket and checks that it exists.
func NewS3(ctx context.Context, cfg S3Config, log zerolog.Logger) (Bucket, error) {
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("check bucket %q at %s://%s: %w", cfg.Bucket, cfg.scheme(), cfg.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("bucket %q does not exist at %s://%s", cfg.Bucket, cfg.scheme(), cfg.Endpoint)
	}
	log.Debug().Str("bucket", cfg.Bucket).Str("endpoint", cfg.Endpoint).Bool("insecure", cfg.Insecure).
		Bool("static_keys", cfg.AccessKey != "").Msg("opened S3 bucket")
	return &s3Bucket{client: client, core: minio.Core{Client: client}, name: cfg.Bucket, partSize: cfg.PartSize}, nil
}

func (b *s3Bucket) Name() string { return b.name }

func (b *s3Bucket) Close() error { return nil }

// s3Error wraps err with op and name, mapping S3's "no such key" to ErrNotFound.
func s3Error(op, name string, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("%s %q: %w (%w)", op, name, ErrNotFound, err)
	}
	return fmt.Errorf("%s %q: %w", op, name, err)
}

func (b *s3Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	// Core.GetObject sends the request now, so a missing object is reported here rather
	// than at the first Read as with Client.GetObject.
	r, _, _, err := b.core.GetObject(ctx, b.name, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s3Error("get", name, err)
	}
	return r, nil
}

func (b *s3Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("get range of %q: negative offset %d", name, off)
	}
	if length == 0 {
		// No byte range means zero bytes; still report a missing object.
		if _, err := b.Size(ctx, name); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	var opts minio.GetObjectOptions
	end := int64(0) // minio-go: (off, 0) is "from off to the end"
	if length > 0 {
		end = off + length - 1
	}
	if off > 0 || length > 0 {
		if err := opts.SetRange(off, end); err != nil {
			return nil, fmt.Errorf("get range of %q: %w", name, err)
		}
	}
	r, _, _, err := b.core.GetObject(ctx, b.name, name, opts)
	if err != nil {
		// A range that starts past the end reads nothing, as on a file.
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		return nil, s3Error("get range of", name, err)
	}
	return r, nil
}

// Upload is one PutObject: minio-go streams in parts of partSize (in parallel when r is an
// io.ReaderAt of known size, such as an *os.File) and S3 shows the object only once the
// upload completes, which gives the atomicity Bucket promises.
func (b *s3Bucket) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	opts := minio.PutObjectOptions{PartSize: b.partSize}
	if size < 0 && opts.PartSize == 0 {
		opts.PartSize = unknownSizePartSize
	}
	_, err := b.client.PutObject(ctx, b.name, name, r, size, opts)
	if err != nil {
		return s3Error("upload", name, err)
	}
	return nil
}

func (b *s3Bucket) Exists(ctx context.Context, name string) (bool, error) {
	_, err := b.Size(ctx, name)
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (b *s3Bucket) Size(ctx context.Context, name string) (int64, error) {
	info, err := b.client.StatObject(ctx, b.name, name, minio.StatObjectOptions{})
	if err != nil {
		return 0, s3Error("stat", name, err)
	}
	return info.Size, nil
}

func (b *s3Bucket) Delete(ctx context.Context, name string) error {
	if err := b.client.RemoveObject(ctx, b.name, name, minio.RemoveObjectOptions{}); err != nil {
		return s3Error("delete", name, err)
	}
	return nil
}

func (b *s3Bucket) Iter(ctx context.Context, dir string, recursive bool, f func(name string) error) error {
	prefix := dir
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	// Cancelling stops the listing when f fails or we return early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range b.client.ListObjectsIter(ctx, b.name, minio.ListObjectsOptions{Prefix: prefix, Recursive: recursive}) {
		if obj.Err != nil {
			return fmt.Errorf("iter %q: %w", dir, obj.Err)
		}
		// A "directory marker" object named like the prefix itself is not an entry.
		if obj.Key == prefix {
			continue
		}
		if err := f(obj.Key); err != nil {
			return err
		}
	}
	return ctx.Err()
}
