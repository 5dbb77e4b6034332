#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it into a fresh virtual environment and
# use it from a folder that has its own `envs` package (as many RL projects do), where nothing of
# this checkout is importable. Run from anywhere; CI runs it after install.sh.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# setuptools builds in the checkout's build/ and ships what it finds there: start it empty, so
# that no file deleted since the last build rides along.
rm -rf "$repo/build"
python3 -m pip wheel -q --no-deps -w "$work/dist" "$repo"
# The venv sees the system's packages (torch 2.13.0 CPU among them), and pip may not reach an
# index (--no-index): every dependency resolves to what is installed, so no CUDA torch comes in.
# Without a pip of its own the venv has no old setuptools either to shadow the one torch needs.
python3 -m venv --system-site-packages --without-pip "$work/venv"
python3 -m pip --python "$work/venv/bin/python" install -q --no-index "$work"/dist/far_world-*.whl
mkdir -p "$work/user/envs"
echo "MINE = True" > "$work/user/envs/__init__.py"
cd "$work/user"
"$work/venv/bin/python" - <<'PY'
import importlib.metadata
import sys

import envs  # this folder's own package

import far_world
import gymnasium
from far_world.rl import ImaginationVecEnv  # noqa: F401

assert envs.MINE and not hasattr(envs, "real"), envs.__file__
assert far_world.__file__.startswith(sys.prefix), f"far_world comes from {far_world.__file__}, not the wheel"
top_level = importlib.metadata.distribution("far-world").read_text("top_level.txt").split()
assert top_level == ["far_world"], top_level
env = gymnasium.make("FARWorld-v0")
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
assert obs.shape == (64, 64, 3) and obs.dtype.name == "uint8", obs.shape
print(f"wheel: FARWorld-v0 stepped from {far_world.__file__} ({env.unwrapped.world.world_spec}), "
      f"beside a folder's own envs package")
PY
