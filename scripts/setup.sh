#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian/Ubuntu: packer, docker.io, debootstrap, a running dockerd,
# and the project's venv in .venv. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { printf 'setup: %s\n' "$*" >&2; }

missing=()
command -v packer >/dev/null || missing+=(packer)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ip >/dev/null || missing+=(iproute2)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the UI test's headless browser (driven by playwright)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
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

if [ ! -x .venv/bin/bake ] || [ pyproject.toml -nt .venv/.installed ]; then
  say "creating .venv and installing bakery with its dev extras"
  python3 -m venv .venv
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi
say "ready: packer $(packer version | head -1), docker $(docker version --format '{{.Server.Version}}'), .venv/bin/bake"
