#!/usr/bin/env bash
# The whole test suite: install into .venv/, lint, run pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh
.venv/bin/ruff check .
exec .venv/bin/pytest -q "$@"
