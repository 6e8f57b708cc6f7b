#!/usr/bin/env bash
# install.sh: install meshctl on a Debian machine. Idempotent: run it again any time.
#
#   ./install.sh            system packages the mesh needs (as root), a virtualenv in .venv
#                           with meshctl and its entry point `.venv/bin/meshctl`
#   ./install.sh --run      then start the example mesh (`meshctl up examples/compose`)
#   ./install.sh --test     also the test extras (docker.io, haproxy, wrk, curl, prometheus, ...),
#                           then run the whole test suite (tests/run.sh); .ci/run does exactly this
#   ./install.sh --no-tests with --test: install the test extras only, run nothing
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

RUN=0; TEST=0; RUN_TESTS=1
for arg in "$@"; do
  case "$arg" in
    --run) RUN=1 ;;
    --test) TEST=1 ;;
    --no-tests) RUN_TESTS=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# What the mesh itself needs: iptables for interception, iproute2 for network namespaces,
# python3-venv for the virtualenv, a C compiler and the Python headers to compile the
# proxy's request path (proxy/compiled: mypyc; without them the proxy runs as pure Python).
# What the tests and benchmarks add: real peers and reference points (HAProxy, nginx, wrk,
# h2load, curl, Prometheus), a Docker engine and debootstrap to build the example image
# locally, openssl to inspect certificates, valgrind to count instructions per request
# (bench.instructions), etcd (etcd-server) for registry replicas on a shared store (docs/etcd.md).
BASE_PKGS=(python3 python3-venv python3-pip python3-dev gcc libc6-dev iptables iproute2
           ca-certificates)
TEST_PKGS=(docker.io docker-compose haproxy nginx-light wrk nghttp2-client curl prometheus
           debootstrap openssl procps systemd util-linux valgrind chromium etcd-server)

missing_pkgs() {
  local p out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

pkgs=("${BASE_PKGS[@]}")
[ "$TEST" = 1 ] && pkgs+=("${TEST_PKGS[@]}")
todo=$(missing_pkgs "${pkgs[@]}")
if [ -n "$todo" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: $todo"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $todo >/dev/null
  elif [ "$(id -u)" != 0 ]; then
    echo "install.sh: not root, so these system packages were NOT installed: $todo" >&2
    echo "  run 'sudo ./install.sh$([ "$TEST" = 1 ] && echo ' --test')' to install them;" >&2
    echo "  without iptables and root the mesh runs in explicit mode on 127.0.0.x" >&2
    echo "  (no transparent interception); tests that need root or Docker are skipped." >&2
  else
    echo "install.sh: apt-get not found: install by hand: $todo" >&2
  fi
fi

# The interpreter: $PYTHON if given, else the distribution's own /usr/bin/python3 (3.11+)
# before whatever `python3` is first on PATH (a pyenv or other build). Debian's is a static,
# profile-guided build; a --enable-shared build without it (pyenv's default) runs the
# proxy's request path ~10 % slower (docs/performance.md, "The interpreter").
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  PY=/usr/bin/python3
else
  PY=python3
fi
if [ ! -x .venv/bin/python ]; then
  say "creating the virtualenv .venv with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PY" -m venv .venv
else
  have=$(readlink -f .venv/bin/python); want=$(readlink -f "$(command -v "$PY")")
  if [ "$have" != "$want" ]; then
    say "note: .venv runs $have, not $want; remove .venv and run this again to switch"
  fi
fi
say "installing meshctl into .venv"
.venv/bin/pip install -q --disable-pip-version-check -U pip >/dev/null 2>&1 || true
# setuptools prints a banner on every editable install ("Editable installation ... may take
# precedence during imports"): a notice, not a fault, so it is filtered from this output.
# Real errors still fail the install.
extras=core; [ "$TEST" = 1 ] && extras=core,test
PYTHONWARNINGS=ignore::UserWarning \
  .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"

# The compiled core: the proxy's request path built with mypyc into build/core/ (about
# a minute). A proxy uses it only while it matches the sources (an edit falls back to pure
# Python until the next build); MESH_COMPILED=0 skips it here and turns it off at run time.
if [ "${MESH_COMPILED:-1}" != 0 ]; then
  if .venv/bin/python -m proxy.compiled status >/dev/null 2>&1; then
    say "compiled core is current"
  else
    say "compiling the proxy's request path (mypyc, about a minute)"
    mkdir -p build
    if .venv/bin/python -m proxy.compiled build >build/core-build.log 2>&1; then
      tail -n 1 build/core-build.log
    elif [ "$TEST" = 1 ]; then
      echo "install.sh: the compiled core did not build; see build/core-build.log" >&2
      exit 1
    else
      echo "install.sh: the compiled core did not build (build/core-build.log);" \
           "the proxy runs as pure Python" >&2
    fi
  fi
  # The tests check that what was built is what the proxies run.
  .venv/bin/python -m proxy.compiled status >/dev/null 2>&1 && export MESH_EXPECT_COMPILED=1
fi
say "meshctl installed: $(.venv/bin/meshctl --version)"

if [ "$TEST" = 1 ] && [ "$RUN_TESTS" = 1 ]; then
  exec bash tests/run.sh
fi
if [ "$RUN" = 1 ]; then
  # The example shop: the registry plus five workloads, each with its sidecar proxy
  # (network namespaces and iptables as root; explicit mode on 127.0.0.1 otherwise).
  .venv/bin/meshctl up examples/compose
  cat <<'EOF2'

The mesh is running. Try (as root):
  ip netns exec frontend-v1 curl -s http://orders:8080/       # by plain name, over mTLS
  .venv/bin/meshctl status
  .venv/bin/meshctl route set-weight orders v1=50 v2=50
  .venv/bin/meshctl down
EOF2
fi
