#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian/Ubuntu; safe to run again, it only does what is missing.
#   scripts/setup.sh          what `bake` needs to run: packer, docker.io (and a running dockerd), debootstrap,
#                             and bakery installed in .venv
#   scripts/setup.sh --test   that, plus what the test suite needs: bakery's dev extras (pytest, ruff, mypy,
#                             moto, playwright), chromium (the UI test's headless browser), iproute2 (the
#                             network-namespace test), postgresql (the team test's database) and
#                             docker-registry (Distribution: the registry tests' image registry)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
for_tests=
for arg in "$@"; do
  case "$arg" in
    --test) for_tests=1 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown option $arg (expected --test or nothing)"; exit 2 ;;
  esac
done
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }  # need COMMAND DEBIAN-PACKAGE
need packer packer
need dockerd docker.io
need debootstrap debootstrap
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ -n "$for_tests" ]; then
  need chromium chromium # the UI test's headless browser (driven by playwright; never `playwright install`)
  need ip iproute2       # the AWS network-namespace test
  need docker-registry docker-registry # the registry tests' registry (tests/registry_server.py starts it)
  # the team test's PostgreSQL (scripts/team-up.sh starts it): Debian keeps initdb off PATH
  command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo_ apt-get update -q
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  mkdir -p .bakery
  say "starting dockerd (log: .bakery/dockerd.log)"
  sudo_ sh -c 'nohup dockerd >"$1" 2>&1 & echo $! >"$2"' sh "$PWD/.bakery/dockerd.log" "$PWD/.bakery/dockerd.pid"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { say "dockerd did not start; see .bakery/dockerd.log"; exit 1; }
fi

# .venv/.installed: bakery is installed; .venv/.installed-dev: with its dev extras. Again when pyproject.toml changes.
if [ -n "$for_tests" ]; then package='.[dev]' marker=.venv/.installed-dev; else package=. marker=.venv/.installed; fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q -U pip
fi
if [ ! -x .venv/bin/bake ] || [ ! -f "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
  say "installing bakery${for_tests:+ with its dev extras} in .venv"
  .venv/bin/pip install -q -e "$package"
  touch "$marker"
  [ -z "$for_tests" ] || touch .venv/.installed # the dev install holds everything running needs
fi
say "ready: packer $(packer version | head -1), docker $(docker version --format '{{.Server.Version}}'), .venv/bin/bake${for_tests:+, the test tools}"
