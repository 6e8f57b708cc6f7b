#!/usr/bin/env bash
# tests/run.sh: start what the tests need (a Docker engine when docker.io is installed),
# run the whole suite, stop what it started. Called by `./install.sh --test` and .ci/run.
set -uo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

STARTED_DOCKERD=""
cleanup() {
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.2; done
  fi
}
trap cleanup EXIT

# A Docker engine for the docker and compose tests, when we can start one (root, dockerd
# installed, none running). On a developer's machine the tests that need it skip with the
# reason when it is absent; in CI (CI=true) they fail (tests/conftest.py), and so does this
# script when it tried to start dockerd and could not: they are the only proof of compose.
DOCKERD_FAILED=""
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  mkdir -p /tmp/meshctl-test
  dockerd >/tmp/meshctl-test/dockerd.log 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || break  # it exited: no use waiting
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    DOCKERD_FAILED="tests/run.sh: dockerd did not start; its log (/tmp/meshctl-test/dockerd.log) ends:"
    echo "$DOCKERD_FAILED" >&2
    tail -n 20 /tmp/meshctl-test/dockerd.log >&2
  fi
fi

.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ -n "$DOCKERD_FAILED" ] && [ "${CI:-}" = true ]; then
  echo "tests/run.sh: FAILED: CI=true and the Docker engine could not be started (see above)" >&2
  rc=$((rc ? rc : 1))
fi
# The run above used the compiled core when install.sh built it (the proxies' default);
# the pure-Python modules are the fallback whenever it is stale or off, so the request
# path's own tests run once more on them.
if [ $# = 0 ] && .venv/bin/python -m proxy.compiled status >/dev/null 2>&1; then
  echo "tests/run.sh: the request path again as pure Python (MESH_COMPILED=0)"
  MESH_COMPILED=0 .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/proxy tests/integration/test_http_semantics.py || rc=$((rc ? rc : 1))
fi
# pytest's 5 means "no tests collected": that is a failure of the suite, not a pass.
exit $rc
