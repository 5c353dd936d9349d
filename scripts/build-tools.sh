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
GOPROXY_URL="${GOPROXY:-https://proxy.golang.org}"; GOPROXY_URL="${GOPROXY_URL%%,*}"

log() { printf '[build-tools] %s\n' "$*" >&2; }

# --- Go version: read from the go.mod of every pinned module, checked before anything builds --------
modules_of() { # what a target builds from, one module@version per line
  case "$1" in
    collector)
      echo "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
      sed -n 's/^[[:space:]]*- gomod:[[:space:]]*\([^[:space:]]*\)[[:space:]]\{1,\}\(v[^[:space:]]*\).*/\1@\2/p' \
        "$ROOT/collector-config/builder-config.yaml" ;;
    jaeger) echo "$JAEGER_MODULE@$JAEGER_VERSION" ;;
    telemetrygen) echo "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$TELEMETRYGEN_VERSION" ;;
  esac
}

go_required() { # $1 target -> "VERSION MODULE@VERSION": the highest `go` line among its modules' go.mod
  local list; list="$(modules_of "$1")"
  local file; file="$CACHE/go-required-$1-$(printf '%s' "$list" | sha256sum | cut -c1-12)"
  if [[ ! -s "$file" ]]; then
    local modver best="" best_from=""
    while read -r modver; do
      [[ -n "$modver" ]] || continue
      # Module paths are case-escaped on the proxy (A -> !a).
      local path; path="$(printf '%s' "${modver%@*}" | sed 's/[A-Z]/!\L&/g')"
      local want; want="$(curl -fsS --max-time 20 "$GOPROXY_URL/$path/@v/${modver#*@}.mod" 2>/dev/null \
        | sed -n 's/^go \([0-9][0-9.]*\).*/\1/p' | head -n1)" || true
      [[ -n "$want" ]] || return 0   # proxy unreachable: no claim rather than a wrong one
      if [[ -z "$best" || "$(printf '%s\n%s\n' "$best" "$want" | sort -V | tail -n1)" != "$best" ]]; then
        best="$want" best_from="$modver"
      fi
    done <<<"$list"
    printf '%s %s\n' "$best" "$best_from" >"$file"
  fi
  cat "$file"
}

check_go() { # $1 target: one clear line and exit 1 when Go is missing or too old for it
  local required need from
  required="$(go_required "$1")"; need="${required%% *}"; from="${required#* }"
  local what="the pinned $1 ($from) needs Go ${need:-(version unknown: module proxy unreachable)}"
  if ! command -v "$GO" >/dev/null 2>&1; then
    log "Go is missing: $what or newer. Install it (https://go.dev/dl/) and put it on PATH."
    exit 1
  fi
  [[ -n "$need" ]] || return 0
  local have; have="$("$GO" env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//')"
  if [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]]; then
    log "Go $have is too old: $what or newer. Install a newer Go (https://go.dev/dl/)."
    exit 1
  fi
}

# --- progress: long builds and waits say what they are doing, once a minute ----------------------------
HEARTBEAT_SECONDS="${BUILD_PROGRESS_SECONDS:-60}"

human() { # seconds -> "42 s" / "13 min"
  if (( $1 >= 120 )); then echo "$(( $1 / 60 )) min"; else echo "$1 s"; fi
}

with_progress() { # $1 label, $2 cache key for the typical duration, rest: the command
  local label="$1" key="$2"; shift 2
  local typical="a cold build (empty Go caches) takes minutes"
  [[ -s "$CACHE/$key.seconds" ]] && typical="the last one here took $(human "$(cat "$CACHE/$key.seconds")")"
  log "$label: $typical; a progress line every ${HEARTBEAT_SECONDS} s"
  local start; start="$(date +%s)"
  ( while sleep "$HEARTBEAT_SECONDS"; do
      log "$label: still building, $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s so far"
    done ) &
  local beat=$! rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null || true; wait "$beat" 2>/dev/null || true
  if (( rc == 0 )); then echo $(( $(date +%s) - start )) >"$CACHE/$key.seconds"; fi
  return "$rc"
}

hash_of() { # hash of args + go version
  { printf '%s\n' "$@"; "$GO" env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-12
}

lock() { # $1 = cache dir being built: serialise concurrent builds of the same thing
  local fd
  exec {fd}>"$1.lock"
  flock -n "$fd" && return 0
  local start; start="$(date +%s)"
  log "waiting for another build of ${1##*/} to finish (lock ${1}.lock); it is shared, so this one will reuse it"
  until flock -w "$HEARTBEAT_SECONDS" "$fd"; do
    log "still waiting for the other build of ${1##*/}: $(( ($(date +%s) - start) / 60 )) min so far"
  done
  log "the other build of ${1##*/} finished after $(( $(date +%s) - start )) s of waiting"
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
    with_progress "go install $name" "$name-install" env GOBIN="$tmp" CGO_ENABLED=0 "$GO" install "$modver"
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
      mkdir -p "$builder_dir"
      with_progress "installing the OCB builder" builder-install \
        env GOBIN="$builder_dir" CGO_ENABLED=0 "$GO" install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
    fi
    log "building otelcol-crm with OCB (cache miss: $dir)"
    local tmp; tmp="$(mktemp -d "$CACHE/.tmp-otelcol-crm-XXXXXX")"
    sed "s#^\(  output_path:\).*#\1 $tmp/src#" "$manifest" > "$tmp/builder-config.yaml"
    local start=$SECONDS
    with_progress "building otelcol-crm" otelcol-crm-build \
      env CGO_ENABLED=0 "$builder_dir/builder" --config "$tmp/builder-config.yaml"
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
    (cd "$tmp/src" && with_progress "building Jaeger" jaeger-build env CGO_ENABLED=0 GOTOOLCHAIN=local "$GO" build \
      -trimpath -ldflags "-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_RELEASE" \
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
  # promtool and the prometheus server (the e2e tests start one on loopback) come from Debian's
  # `prometheus` package, installed when missing. The package ships a system service listening
  # on :9090; it must not run here (tests and `make stack` pick their own ports), so the
  # install denies service starts through policy-rc.d, and any prometheus service that runs
  # anyway is stopped and disabled by its service name, never by process name.
  if [[ ! -x /usr/bin/prometheus || ! -x /usr/bin/promtool ]]; then
    install_prometheus_package
  fi
  link_into_build /usr/bin/promtool promtool
  link_into_build /usr/bin/prometheus prometheus
}

install_prometheus_package() {
  command -v apt-get >/dev/null || { log "prometheus missing and no apt-get: install Prometheus 2.x (server and promtool)"; exit 1; }
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [[ ! -e "$policy" ]]; then  # (an existing policy, e.g. a container's `exit 101`, is kept)
    printf '#!/bin/sh\n# written by otel_crm scripts/build-tools.sh during apt-get install prometheus\nexit 101\n' > "$policy"
    chmod 755 "$policy"; own_policy=1
  fi
  log "apt-get install prometheus (server + promtool; no recommends: no node exporter service)"
  local rc=0
  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends prometheus >/dev/null; } || rc=$?
  [[ -n "$own_policy" ]] && rm -f "$policy"
  (( rc == 0 )) || { log "apt-get install prometheus failed ($rc)"; exit "$rc"; }
  stop_prometheus_service
}

stop_prometheus_service() {
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]]; then
    if service prometheus status >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

mkdir -p "$CACHE"
case "${1:-all}" in
  collector) check_go collector; build_collector ;;
  jaeger) check_go jaeger; build_jaeger ;;
  telemetrygen) check_go telemetrygen; build_telemetrygen ;;
  promtool) build_promtool ;;
  all) for t in collector jaeger telemetrygen; do check_go "$t"; done
       build_collector; build_jaeger; build_telemetrygen; build_promtool ;;
  *) echo "usage: $0 collector|jaeger|telemetrygen|promtool|all" >&2; exit 2 ;;
esac
