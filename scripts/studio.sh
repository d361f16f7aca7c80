#!/usr/bin/env bash
# Install yolov7-studio into .venv and run the built-in demo (no external data, nothing downloaded).
# Extra arguments go to `yolov7-studio demo` (see `yolov7-studio demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "== installing yolov7-studio into .venv =="
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[studio,export]" 2> >(grep -v "is ignored: it is neither" >&2)
exec .venv/bin/yolov7-studio demo "$@"
