#!/usr/bin/env bash
# Installs far-world on a fresh machine: the system libraries for headless rendering
# (when run as root), then the package with its worlds, RL and test extras.
set -euo pipefail
cd "$(dirname "$0")"
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || [ ! -e /usr/lib/x86_64-linux-gnu/dri ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1-mesa-dri
  else
    echo "install.sh: headless rendering needs Debian's libegl1 and libgl1-mesa-dri;" \
         "run as root or ask your administrator: apt-get install libegl1 libgl1-mesa-dri" >&2
  fi
fi
# torch==2.13.0 is pinned in pyproject.toml: the CPU build installs from a local wheel.
python3 -m pip install -q -e ".[worlds,rl,dev]"
