#!/usr/bin/env bash
# Set up a virtual environment (once) and run the linters and the whole test suite on CPU.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k resume  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# llama-cpp-python compiles llama.cpp (once; pip caches the wheel it built): its multimodal
# library (mtmd, ~50 more C++ files) is of no use to the GGUF tests, so it is not built.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
