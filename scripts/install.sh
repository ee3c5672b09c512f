#!/usr/bin/env bash
# Create (or update) the project's environment in .venv. Idempotent: rerunning only checks.
#   scripts/install.sh          package + CP2K (for labelling)
#   scripts/install.sh --test   also the test tools (pytest, headless Chromium for the report test)
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# libopenblas0-serial: Debian's CP2K links the reference BLAS/LAPACK by default; OpenBLAS halves the time
# of a k-point SCF step (54-atom WS2: 52 -> 27 s on one core, docs/datasets.md). Serial: one thread per rank.
apt_packages=(cp2k cp2k-data libopenblas0-serial)
((with_test)) && apt_packages+=(chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# torch first and pinned: anything else would pull a CUDA build of several GB.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
extras=""
((with_test)) && extras="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
