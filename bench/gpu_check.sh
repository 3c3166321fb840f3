#!/usr/bin/env bash
# Every CUDA path of Tailored in one short run (a few minutes on one GPU); one line per path with its figure.
# Exit 0: all ok (or skipped, said so, e.g. no CUDA here); 1: a path failed (its line says FAIL and why).
#   bash bench/gpu_check.sh [--steps 8] [--out DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
exec "$py" "$here/gpu_check.py" "$@"
