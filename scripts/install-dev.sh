#!/usr/bin/env bash
# Creates .venv with every distribution of this repository installed in editable mode,
# plus the test tools. Safe to re-run. CPU-only torch is pinned by .ci/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
extra=()
if [ -d /opt/wheels ]; then extra+=(--find-links /opt/wheels); fi
python -m pip install -q --upgrade pip setuptools
python -m pip install -q "${extra[@]}" -c .ci/constraints.txt \
  -e "core[orbax,fast,data]" -e cli -e "backends/jax[orbax]" -e backends/torch -e conformance \
  -e "plugins/aloha[sim]" -e plugins/droid -e plugins/libero -e plugins/ur5 \
  pytest ruff h5py hypothesis
echo "installed into $(pwd)/.venv; activate with: . .venv/bin/activate"
