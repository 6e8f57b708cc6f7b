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
# installed, none running). Tests that need it skip with the reason when it is absent.
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  mkdir -p /tmp/meshctl-test
  dockerd >/tmp/meshctl-test/dockerd.log 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || echo "tests/run.sh: dockerd did not start (see /tmp/meshctl-test/dockerd.log)" >&2
fi

.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
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
