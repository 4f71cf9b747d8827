#!/usr/bin/env bash
# The main job: install into .venv/, then generate a graph, build, show recommendations and the
# evaluation table, and serve on http://127.0.0.1:8000 (Ctrl-C stops). Extra args go to `pymk quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pymk quickstart "$@"
