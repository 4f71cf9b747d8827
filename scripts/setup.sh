#!/usr/bin/env bash
# Creates .venv/ in the project root (if missing) and installs pymk with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# the operator console's front-end libraries, from npm into the package (nothing from a CDN at run time)
if [ ! -f pymk/console/static/vendor/cytoscape.min.js ] || [ pymk/console/web/package-lock.json -nt pymk/console/static/vendor/cytoscape.min.js ]; then
  bash scripts/build_console.sh || echo "setup: the console's libraries are not bundled (see above): /console will say so" >&2
fi
