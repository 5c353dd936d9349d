#!/usr/bin/env bash
# Build (or reuse from the hash-keyed cache) the binaries the collector stack needs.
#
#   scripts/build-tools.sh collector|jaeger|telemetrygen|promtool|all
#
# Binaries live in ${OTEL_CRM_CACHE:-$HOME/.cache/otel-crm}/<name>-<hash>/ where
# <hash> covers the manifest / pinned version and the Go version, and are
# symlinked into the repo's git-ignored build/. A fresh clone on the same machine
# therefore links the cached binary instead of rebuilding.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${OTEL_CRM_CACHE:-$HOME/.cache/otel-crm}"
BUILD="${BUILD_DIR:-$ROOT/build}"

# Pins (keep in sync with collector-config/README.md).
OCB_VERSION="${OCB_VERSION:-v0.161.0}"
TELEMETRYGEN_VERSION="${TELEMETRYGEN_VERSION:-v0.161.0}"
# Jaeger v2: the module has no /v2 suffix. Module version v1.76.0 is the
# Jaeger v2.13.0 release (the newest the module proxy serves us; v2.14+ commits
# are refused with 403). Its go.mod has a `replace`, so `go install` refuses it;
# we build it as the MAIN module from the proxy's source zip instead, where the
# replace applies. See collector-config/README.md.
JAEGER_MODULE="${JAEGER_MODULE:-github.com/jaegertracing/jaeger}"
JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
JAEGER_RELEASE="${JAEGER_RELEASE:-v2.13.0}"

if ! command -v go >/dev/null 2>&1; then
  export PATH="$PATH:/usr/local/go/bin"
fi
GO="${GO:-go}"

log() { printf '[build-tools] %s\n' "$*" >&2; }

hash_of() { # hash of args + go version
  { printf '%s\n' "$@"; "$GO" env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-12
}

lock() { # $1 = cache dir being built: serialise concurrent builds of the same thing
  local fd
  exec {fd}>"$1.lock"
  flock "$fd"
}

publish() { # $1 = tmp dir, $2 = final cache dir: keep an existing build, else move into place
  if [[ -e "$2" ]]; then rm -rf "$1"; else mv "$1" "$2"; fi
}

link_into_build() { # $1 = cached binary, $2 = name in build/
  mkdir -p "$BUILD"
  ln -sfn "$1" "$BUILD/$2"
  log "$2 -> $1"
}

go_install_cached() { # $1 name, $2 module@version, $3 binary name
  local name="$1" modver="$2" bin="$3"
  local dir="$CACHE/$name-$(hash_of "$modver")"
  [[ -x "$dir/$bin" ]] || lock "$dir"
  if [[ ! -x "$dir/$bin" ]]; then
    log "go install $modver (cache miss: $dir)"
    local tmp; tmp="$(mktemp -d "$CACHE/.tmp-$name-XXXXXX")"
    GOBIN="$tmp" CGO_ENABLED=0 "$GO" install "$modver"
    rm -rf "$dir"; publish "$tmp" "$dir"
  fi
  link_into_build "$dir/$bin" "$name"
}

build_collector() {
  local manifest="$ROOT/collector-config/builder-config.yaml"
  local dir="$CACHE/otelcol-crm-$(hash_of "$OCB_VERSION" "$(cat "$manifest")")"
  [[ -x "$dir/otelcol-crm" ]] || lock "$dir"
  if [[ ! -x "$dir/otelcol-crm" ]]; then
    local builder_dir="$CACHE/builder-$OCB_VERSION-$(hash_of "$OCB_VERSION")"
    # (the otelcol-crm lock above also covers installing the builder)
    if [[ ! -x "$builder_dir/builder" ]]; then
      log "installing OCB builder $OCB_VERSION"
      mkdir -p "$builder_dir"
      GOBIN="$builder_dir" CGO_ENABLED=0 "$GO" install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
    fi
    log "building otelcol-crm with OCB (cache miss: $dir)"
    local tmp; tmp="$(mktemp -d "$CACHE/.tmp-otelcol-crm-XXXXXX")"
    sed "s#^\(  output_path:\).*#\1 $tmp/src#" "$manifest" > "$tmp/builder-config.yaml"
    local start=$SECONDS
    CGO_ENABLED=0 "$builder_dir/builder" --config "$tmp/builder-config.yaml"
    log "OCB build took $((SECONDS - start)) s"
    mv "$tmp/src/otelcol-crm" "$tmp/otelcol-crm"
    rm -rf "$tmp/src" "$dir"; publish "$tmp" "$dir"
  fi
  link_into_build "$dir/otelcol-crm" otelcol-crm
}

build_jaeger() {
  local dir="$CACHE/jaeger-$(hash_of "$JAEGER_MODULE@$JAEGER_VERSION")"
  [[ -x "$dir/jaeger" ]] || lock "$dir"
  if [[ ! -x "$dir/jaeger" ]]; then
    log "building Jaeger $JAEGER_RELEASE ($JAEGER_MODULE@$JAEGER_VERSION) (cache miss: $dir)"
    local src
    src="$(GOFLAGS=-mod=mod "$GO" mod download -json "$JAEGER_MODULE@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "$src/cmd/jaeger" ]] || { log "module source for $JAEGER_MODULE@$JAEGER_VERSION not found"; exit 1; }
    local tmp; tmp="$(mktemp -d "$CACHE/.tmp-jaeger-XXXXXX")"
    cp -r "$src" "$tmp/src"; chmod -R u+w "$tmp/src"
    local start=$SECONDS
    (cd "$tmp/src" && CGO_ENABLED=0 GOTOOLCHAIN=local "$GO" build -trimpath \
      -ldflags "-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_RELEASE" \
      -o "$tmp/jaeger" ./cmd/jaeger)
    log "Jaeger build took $((SECONDS - start)) s"
    rm -rf "$tmp/src" "$dir"; publish "$tmp" "$dir"
  fi
  link_into_build "$dir/jaeger" jaeger
}

build_telemetrygen() {
  go_install_cached telemetrygen \
    "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$TELEMETRYGEN_VERSION" telemetrygen
}

build_promtool() {
  # promtool comes from Debian's `prometheus` package. We extract the .deb
  # instead of installing it, so no prometheus service gets started on :9090.
  local p
  if p="$(command -v promtool 2>/dev/null)"; then link_into_build "$p" promtool; return; fi
  local dir; dir="$(ls -d "$CACHE"/prometheus-deb-*/ 2>/dev/null | head -n1 || true)"
  dir="${dir%/}"
  if [[ -z "$dir" || ! -x "$dir/usr/bin/promtool" ]]; then
    command -v apt-get >/dev/null || { log "promtool missing and no apt-get: install Prometheus' promtool"; exit 1; }
    local tmp; tmp="$(mktemp -d "$CACHE/.tmp-prometheus-XXXXXX")"
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
      log "apt-get update (package lists missing)"
      apt-get update -qq >/dev/null
      (cd "$tmp" && apt-get download prometheus >/dev/null)
    fi
    local deb; deb="$(ls "$tmp"/prometheus_*.deb)"
    local ver; ver="$(dpkg-deb -f "$deb" Version)"
    dpkg-deb -x "$deb" "$tmp/root"
    dir="$CACHE/prometheus-deb-$(hash_of "$ver")"
    rm -rf "$dir"; mv "$tmp/root" "$dir"; rm -rf "$tmp"  # same version → same content
  fi
  link_into_build "$dir/usr/bin/promtool" promtool
  # The prometheus server binary from the same package (used by `make stack`).
  link_into_build "$dir/usr/bin/prometheus" prometheus
}

mkdir -p "$CACHE"
case "${1:-all}" in
  collector) build_collector ;;
  jaeger) build_jaeger ;;
  telemetrygen) build_telemetrygen ;;
  promtool) build_promtool ;;
  all) build_collector; build_jaeger; build_telemetrygen; build_promtool ;;
  *) echo "usage: $0 collector|jaeger|telemetrygen|promtool|all" >&2; exit 2 ;;
esac
