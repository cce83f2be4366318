#!/usr/bin/env bash
# Run the test suite (real local Ray, CPU only). Exits non-zero on any failure, including "no tests collected".
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check sopo_ray tests bench scripts
.venv/bin/python -m pytest "$@"
