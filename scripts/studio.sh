#!/usr/bin/env bash
# Install yolov7-studio into .venv and open the studio on the built-in demo (demo dataset generated locally in
# seconds, the shipped demo checkpoint in assets/; nothing downloaded, no training before the page is up).
# Extra arguments go to `yolov7-studio studio` (see `yolov7-studio studio --help`), e.g. --port 7861.
# The old command-line end-to-end run is `.venv/bin/yolov7-studio demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "== installing yolov7-studio into .venv =="
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[studio,export]" 2> >(grep -v "is ignored: it is neither" >&2)
exec .venv/bin/yolov7-studio studio "$@"
