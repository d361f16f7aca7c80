#!/usr/bin/env bash
# Install everything the test suite needs and run it: Debian's Chromium for the browser tests (when run as
# root and missing), a virtual environment in .venv with the project and its [dev] extra (test tools,
# front ends, FiftyOne with its MongoDB, ONNX Runtime), then the whole pytest suite. Extra arguments go to
# pytest, e.g. `./scripts/test.sh -m "not slow"` to skip the slow end-to-end tests locally.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Chromium (browser tests) =="
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "note: no chromium on PATH and not root: browser tests will be skipped" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv =="
  "$PYTHON" -m venv .venv
fi
echo "== installing yolov7-studio[dev] into .venv =="
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" 2> >(grep -v "is ignored: it is neither" >&2)

echo "== running the test suite =="
# FiftyOne (with its MongoDB service) runs in a pytest process of its own: in one long process with every other
# native runtime of the suite loaded (torch, ONNX Runtime, OpenVINO, Chromium drivers) it once crashed with SIGSEGV.
status=0
.venv/bin/python -m pytest --ignore=tests/test_fiftyone.py "$@" || status=$?
fo_status=0
.venv/bin/python -m pytest tests/test_fiftyone.py "$@" || fo_status=$?
# exit 5 = no test collected (e.g. a -k that matches nothing in one of the two runs) is not a failure here
for s in "$status" "$fo_status"; do
  if [ "$s" != 0 ] && [ "$s" != 5 ]; then exit "$s"; fi
done
if [ "$status" = 5 ] && [ "$fo_status" = 5 ]; then exit 5; fi
exit 0
