"""Training speed of the FAR presets against this machine's measured fp32 matmul peak.

    python benchmarks/train_speed.py [--presets tiny,cpu] [--steps 6] [--frames F] [--threads N] [key=value ...]

Prints the hardware, the fp32 matmul peak measured in this run (a large square matmul on all
threads), then for each preset: tokens per step, step time, training tokens/s, the FLOPs of
one step and the achieved FLOP/s over the peak. A step is the real one of train_far
(``FARTrainer.train_step``: forward, backward, clipping, AdamW, EMA) on random latents.

The ratio pairs each timed step with a peak measured right after it (see measure_preset).
FLOPs of a step: the matmuls as ``torch.utils.flop_counter.FlopCounterMode`` counts them
(forward and backward), plus attention counted analytically, because the CPU's fused
attention kernel is not in the counter's table: 4 N^2 D per layer forward for the
N x N scores and the weighted sum (the block-causal mask is applied densely, so all of it
is computed), times 3 for forward + backward.
"""

from __future__ import annotations

import argparse
import json
import time

import far_world  # noqa: F401  (first: torch's OpenMP settings precede its import; far_world/openmp.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from far_world.data.clips import ClipBatch  # noqa: E402
from far_world.hardware import describe_hardware, measure_matmul_peak  # noqa: E402
from far_world.training.distributed import DistInfo, resolve_device  # noqa: E402
from far_world.training.far_trainer import FARTrainer, clip_tokens  # noqa: E402
from far_world.training.presets import FAR_PRESETS, FARTrainConfig, apply_overrides, preset  # noqa: E402


class _Store:
    def __init__(self, length: int) -> None:
        self.lengths = np.array([length])


class RandomLatentClips:
    """Stands in for a ClipDataset: random latents and actions of a fixed clip length."""

    def __init__(self, cfg: FARTrainConfig, frames: int) -> None:
        self.cfg, self.frames = cfg, frames
        self.store = _Store(frames)

    def sample_batch(
        self, batch_size: int, step: int, rank: int = 0, world_size: int = 1, clip_len: int | None = None
    ) -> ClipBatch:
        far, n = self.cfg.far, batch_size // world_size
        rng = np.random.default_rng([step, rank])
        f = clip_len or self.frames
        shape = (n, f, far.latent_channels, far.latent_size, far.latent_size)
        return ClipBatch(
            frames=rng.standard_normal(shape, dtype=np.float32),
            actions=rng.integers(0, far.action_nvec[0], size=(n, f)),
            rewards=np.zeros((n, f), np.float32),
            terminated=np.zeros((n, f), bool),
            episode=np.zeros(n, np.int64),
            start=np.zeros(n, np.int64),
        )


def attention_flops(cfg: FARTrainConfig, frames: int, batch: int) -> float:
    """Forward + backward FLOPs of the attention scores and weighted sums of one step."""
    n = clip_tokens(cfg, frames)
    return 3 * 4 * n * n * cfg.far.width * cfg.far.depth * batch


def step_flops(trainer: FARTrainer, frames: int) -> float:
    """FLOPs of one training step: counted matmuls plus analytic attention."""
    cfg = trainer.cfg
    batch = trainer.dataset.sample_batch(cfg.batch_size, 0, clip_len=frames).to_torch(trainer.dist.device)
    with FlopCounterMode(display=False) as counter:
        out = trainer.model.training_loss(batch.frames, batch.actions, batch.rewards, batch.terminated)
        out["loss"].backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() + attention_flops(cfg, frames, cfg.batch_size)


def measure_preset(cfg: FARTrainConfig, frames: int, steps: int, device: torch.device) -> dict:
    """Step time, throughput and achieved/peak of one preset.

    Each timed step is paired with a peak measurement taken right after it, and the ratio is
    the median of the pairs: on a machine shared with other jobs the load drifts, and a step
    and the peak measured seconds apart under the same load are comparable where a single
    peak taken at the start is not.
    """
    trainer = FARTrainer(cfg, RandomLatentClips(cfg, frames), DistInfo(0, 1, 0, device))
    flops = step_flops(trainer, frames)
    for _ in range(2):  # warm-up: allocator, kernel choice, RoPE/mask tables
        trainer.train_step()
    times, peaks = [], []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peaks.append(measure_matmul_peak(device, min_seconds=0.5) * 1e9)
    seconds = float(np.median(times))
    tokens = cfg.batch_size * clip_tokens(cfg, frames)
    return {
        "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2),
        "shape": f"{cfg.far.depth}x{cfg.far.width} patch {cfg.far.patch_size}",
        "batch": cfg.batch_size,
        "clip_frames": frames,
        "tokens_per_step": tokens,
        "step_s": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "gflop_per_step": round(flops / 1e9, 2),
        "achieved_gflop_s": round(flops / seconds / 1e9, 1),
        "peak_gflop_s": round(float(np.median(peaks)) / 1e9, 1),
        "ratio_to_peak": round(float(np.median([flops / t / p for t, p in zip(times, peaks)])), 3),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,cpu", help="comma-separated FAR presets")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per preset")
    parser.add_argument("--frames", type=int, help="clip length (default: the middle of the preset's range)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads for the peak and the steps alike (default: all)")
    parser.add_argument("overrides", nargs="*", help="config fields applied to every preset, e.g. batch_size=8")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(json.dumps({"hardware": describe_hardware(device)}))
    print(json.dumps({"fp32_matmul_peak_gflop_s": round(measure_matmul_peak(device), 1)}))
    results = []
    for name in args.presets.split(","):
        cfg = apply_overrides(preset(FAR_PRESETS, name), [*args.overrides, f"device={device}"])
        frames = args.frames or (cfg.min_clip_frames + cfg.max_clip_frames) // 2
        results.append({"preset": name, **measure_preset(cfg, frames, args.steps, device)})
        print(json.dumps(results[-1]))
    return results


if __name__ == "__main__":
    main()
