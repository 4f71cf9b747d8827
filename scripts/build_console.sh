#!/usr/bin/env bash
# Bundles the operator console's front-end libraries (npm: cytoscape, chart.js; versions pinned in
# pymk/console/web/package-lock.json) into pymk/console/static/vendor/, which the package serves: nothing is
# fetched from a CDN at run time. Run by scripts/setup.sh; again after changing package.json.
set -euo pipefail
cd "$(dirname "$0")/../pymk/console/web"
if ! command -v npm >/dev/null; then
  echo "build_console: npm not found: install Node.js (Debian: apt-get install nodejs npm) to bundle the console" >&2
  exit 1
fi
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
mkdir -p ../static/vendor
cp node_modules/cytoscape/dist/cytoscape.min.js ../static/vendor/cytoscape.min.js
cp node_modules/chart.js/dist/chart.umd.min.js ../static/vendor/chart.umd.min.js
for pkg in cytoscape chart.js; do  # each bundled file keeps its licence beside it
  cp "node_modules/$pkg/LICENSE"* "../static/vendor/LICENSE.$pkg" 2>/dev/null || true
done
