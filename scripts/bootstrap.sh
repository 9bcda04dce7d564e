#!/usr/bin/env bash
# Create or refresh .venv from requirements.lock (exact pins: installs without resolving).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
# torch comes as a CPU build: from a local wheel folder where the machine has one,
# else from PyTorch's CPU index (never the multi-GB CUDA build).
if [ -d /opt/wheels ] && ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  export UV_FIND_LINKS=/opt/wheels
else
  export UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu UV_INDEX_STRATEGY=unsafe-best-match
fi

want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.recops-lock 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "recops: creating .venv from requirements.lock (first time: a few minutes)" >&2
[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
uv pip sync --quiet --python .venv/bin/python requirements.lock
uv pip install --quiet --python .venv/bin/python --no-deps -e .
echo "$want" > .venv/.recops-lock
