#!/usr/bin/env bash
# The browser the console's tests drive: Debian's chromium package (Playwright cannot download its own here).
# Installed when missing and this user may (root with apt-get); otherwise the browser tests skip, saying why.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser: installing Debian's chromium for the console's browser tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "browser: chromium not found and cannot be installed here: the browser tests will skip" >&2
fi
