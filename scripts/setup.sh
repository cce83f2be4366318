#!/usr/bin/env bash
# Create .venv, install torch pinned to 2.13.0 first (CPU wheel here; an unpinned torch pulls GBs of CUDA),
# then this package (editable) with its dependencies, the dev tools and the tracker extras the tests read back
# (tensorboard, wandb); torch stays pinned in every step. Safe to rerun.
# It prints what it installed, where, and how long it took; pip's own output goes to .venv/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$SECONDS
[ -x .venv/bin/python ] || "$PY" -m venv .venv
LOG=.venv/setup.log
: >"$LOG"

step() {  # step "what" pip-args...: one line on the terminal, pip's output in the log, its tail on failure
  local what=$1
  shift
  echo "setup: $what"
  if ! .venv/bin/python -m pip "$@" >>"$LOG" 2>&1; then
    echo "setup: failed: pip $*; the end of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

step "pip (latest)" install --upgrade pip
step "torch 2.13.0" install torch==2.13.0
step "sopo_ray (editable) with its dependencies and the dev, tensorboard and wandb extras" \
  install torch==2.13.0 -e ".[dev,tensorboard,wandb]"

.venv/bin/python - <<'EOF'
import sys
from importlib.metadata import version
from pathlib import Path

import sopo_ray

names = ["torch", "ray", "tensorboard", "wandb", "pytest", "ruff"]
print(f"setup: {Path(sys.prefix)} (Python {sys.version.split()[0]}); sopo_ray {version('sopo_ray')} editable from "
      f"{Path(sopo_ray.__file__).resolve().parents[1]}")
print("setup: " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
# What pip said that concerns this project: deprecations, build-backend warnings, dependency conflicts.
notes=$(grep -E "DEPRECATION|BuildBackendWarning|dependency resolver|is incompatible" "$LOG" || true)
[ -z "$notes" ] || { echo "setup: pip said:"; echo "$notes" | sed 's/^/  /'; }
echo "setup: done in $((SECONDS - start)) s (pip's full output: $LOG)"
