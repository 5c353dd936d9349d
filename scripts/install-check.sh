#!/usr/bin/env bash
# What a new user's `pip install` does, proven: build the wheel, install it with the pip that
# `python -m venv` ships (never upgraded) and no constraints file into a fresh venv, together with
# the upstream opentelemetry-distro, then `pip check` and the unit tests against what resolved.
#
#   scripts/install-check.sh [PYTHON...]
#
# PYTHONs default to $INSTALL_CHECK_PYTHONS, else every CPython 3.10-3.13 pyenv has, else python3.
# Unit tests run on $INSTALL_CHECK_TEST_PYTHONS (default: the oldest and the newest of them; `all`
# for every one): the OpenTelemetry set that resolves is the same on each, and a unit run costs
# about a minute on this machine. Downloads and built wheels come from pip's own cache
# (~/.cache/pip), so only the first run fetches; the venvs are rebuilt every time, on purpose.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${INSTALL_CHECK_DIR:-$ROOT/build/install-check}"
DEV_PY="${PY:-$ROOT/.venv/bin/python}"
EXTRAS="${INSTALL_CHECK_EXTRAS:-flask,django,sqlalchemy,requests}"
STEP_TIMEOUT="${INSTALL_CHECK_TIMEOUT:-600}"   # seconds, per install and per unit run

log() { printf '[install-check] %s\n' "$*" >&2; }

pythons=("$@")
if (( ${#pythons[@]} == 0 )); then
  if [[ -n "${INSTALL_CHECK_PYTHONS:-}" ]]; then
    read -r -a pythons <<<"$INSTALL_CHECK_PYTHONS"
  else
    for minor in 10 11 12 13; do
      found="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*/bin/python3 2>/dev/null | sort -V | tail -n1 || true)"
      [[ -n "$found" ]] && pythons+=("$found")
    done
    (( ${#pythons[@]} )) || pythons=(python3)
  fi
fi
case "${INSTALL_CHECK_TEST_PYTHONS:-ends}" in
  all) tested=("${pythons[@]}") ;;
  ends) tested=("${pythons[0]}" "${pythons[-1]}") ;;
  none) tested=() ;;
  *) read -r -a tested <<<"$INSTALL_CHECK_TEST_PYTHONS" ;;
esac

# The user's pip sees no constraints of ours, whatever this shell carries.
unset PIP_CONSTRAINT PIP_REQUIREMENT PIP_NO_INDEX PIP_UPGRADE
export PIP_DISABLE_PIP_VERSION_CHECK=1

mkdir -p "$WORK"
start=$SECONDS
rm -rf "$WORK/dist"
"$DEV_PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT"
wheel="$(ls "$WORK"/dist/otel_crm-*.whl)"
log "built ${wheel#$ROOT/} in $((SECONDS - start)) s"

# Installs are network- and disk-bound: run them side by side, then check and test one by one.
# (--no-compile only skips writing .pyc files; what resolves is the same.)
install() { # python venv
  "$1" -m venv "$2"
  local t0=$SECONDS
  if timeout "$STEP_TIMEOUT" "$2/bin/python" -m pip install -q --no-compile "$wheel[$EXTRAS]" opentelemetry-distro \
      pytest pytest-asyncio pyyaml >"$2.install.log" 2>&1; then
    echo "$((SECONDS - t0))" >"$2.install.ok"
  else
    echo "$((SECONDS - t0))" >"$2.install.failed"
  fi
}
venvs=()
for python in "${pythons[@]}"; do
  version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  venv="$WORK/py$version"
  rm -rf "$venv" "$venv".install.*
  venvs+=("$venv")
  install "$python" "$venv" &
done
"$DEV_PY" "$ROOT/scripts/otel_family.py" >"$WORK/family.txt" 2>&1 &   # is a newer family complete?
wait
sed 's/^/[install-check] /' "$WORK/family.txt" >&2

unit() { # venv: the unit tests against the installed wheel, from outside the clone
  # With the clone *appended* to sys.path, `import otel_crm` is the installed wheel (a test asserts
  # it when OTEL_CRM_EXPECT_INSTALLED=1) and `tests.*` the clone's.
  (cd "$WORK" && OTEL_CRM_EXPECT_INSTALLED=1 timeout "$STEP_TIMEOUT" "$1/bin/python" -m pytest -q \
    -p no:cacheprovider --import-mode=append -c "$ROOT/pyproject.toml" --rootdir "$ROOT" "$ROOT/tests/unit" \
    >"$1.unit.log" 2>&1) && echo ok >"$1.unit.status" || echo failed >"$1.unit.status"
}

failures=0
testing=()
for i in "${!pythons[@]}"; do
  python="${pythons[$i]}" venv="${venvs[$i]}"
  version="${venv##*/py}"
  pip_version="$("$venv/bin/python" -m pip --version | cut -d' ' -f2)"
  if [[ -f "$venv.install.failed" ]]; then
    log "Python $version, pip $pip_version: install FAILED after $(cat "$venv.install.failed") s (${venv#$ROOT/}.install.log):"
    tail -n 5 "$venv.install.log" >&2
    failures=$((failures + 1)); continue
  fi
  log "Python $version, pip $pip_version: installed in $(cat "$venv.install.ok") s (side by side with the others)"
  if ! "$venv/bin/python" -m pip check >&2; then failures=$((failures + 1)); continue; fi
  "$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -E '^opentelemetry-(sdk|instrumentation|distro|instrumentation-flask)==' | tr '\n' ' ' | sed 's/^/  resolved: /' >&2
  echo >&2
  for t in "${tested[@]}"; do
    if [[ "$t" == "$python" ]]; then testing+=("$venv"); rm -f "$venv.unit.status"; unit "$venv" & break; fi
  done
done
t0=$SECONDS
wait   # the unit runs, side by side (one process each)
for venv in "${testing[@]}"; do
  if [[ "$(cat "$venv.unit.status")" == ok ]]; then
    log "Python ${venv##*/py}: unit tests $(tail -n1 "$venv.unit.log" | tr -d '=')"
  else
    log "Python ${venv##*/py}: unit tests FAILED (${venv#$ROOT/}.unit.log):"
    grep -E '^(FAILED|ERROR)' "$venv.unit.log" | head -n 10 >&2 || tail -n 20 "$venv.unit.log" >&2
    failures=$((failures + 1))
  fi
done
(( ${#testing[@]} == 0 )) || log "unit runs took $((SECONDS - t0)) s side by side"

log "done in $((SECONDS - start)) s: ${#pythons[@]} Python(s), $failures failure(s)"
(( failures == 0 ))
