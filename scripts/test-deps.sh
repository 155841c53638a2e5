#!/usr/bin/env bash
# Installs, idempotently, the real programs the tests run against and caches them under
# ${BLOCKFLOW_CACHE:-$HOME/.cache/blockflow}/bin:
#   promtool    Debian's prometheus package (blocks via create-blocks-from openmetrics)
#   prometheus  a reference server of the same version as the prometheus module in go.mod
#   minio       a MinIO server for the S3 tests (loopback only)
#   thanos      a stock Thanos (Querier) to check queryd's StoreAPI against
# Prints the bin directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${BLOCKFLOW_CACHE:-$HOME/.cache/blockflow}"
bin="$cache/bin"
mkdir -p "$bin"
log() { echo "test-deps: $*" >&2; }

minio_version="v0.0.0-20260212201848-7aac2a2c5b7c"
thanos_version="v0.42.4"
thanos_stamp="thanos.$thanos_version.slicelabels"
prom_module_version="$(go list -m -f '{{.Version}}' github.com/prometheus/prometheus)"

if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$bin/promtool" ]; then
  log "installing Debian's prometheus package for promtool"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  # policy-rc.d keeps the package from starting a Prometheus service on install.
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null; $sudo chmod +x /usr/sbin/policy-rc.d
  $sudo apt-get install -y -qq --no-install-recommends prometheus >&2
  $sudo rm -f /usr/sbin/policy-rc.d
fi
if [ ! -x "$bin/promtool" ]; then ln -sf "$(command -v promtool)" "$bin/promtool"; fi

stamp="$bin/prometheus.$prom_module_version"
if [ ! -e "$stamp" ]; then
  log "building prometheus $prom_module_version (the go.mod version) with go install"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/prometheus/prometheus/cmd/prometheus@$prom_module_version" >&2
  touch "$stamp"
fi

stamp="$bin/minio.$minio_version"
if [ ! -e "$stamp" ]; then
  log "building minio $minio_version with go install"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$minio_version" >&2
  touch "$stamp"
fi
stamp="$bin/$thanos_stamp"
if [ ! -e "$stamp" ]; then
  # Thanos's go.mod has replace directives, so `go install pkg@version` refuses it; build
  # inside a copy of the module instead, where they apply.
  log "building thanos $thanos_version from the module proxy"
  dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/thanos-io/thanos@$thanos_version" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  src="$(mktemp -d)"
  cp -r "$dir/." "$src" && chmod -R u+w "$src"
  (cd "$src" && GOFLAGS="-mod=mod -buildvcs=false" go build -tags "netgo slicelabels" -o "$bin/thanos" ./cmd/thanos) >&2
  rm -rf "$src"
  touch "$stamp"
fi
echo "$bin"
