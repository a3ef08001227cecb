#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the analyst page's browser test (tests/test_serve.py).
# Installs them when absent (needs root and the Debian mirror); the test skips without them.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium.sh: not root; the browser test will be skipped" >&2
  exit 0
fi
echo "chromium.sh: installing Debian's chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
