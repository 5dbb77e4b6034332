"""The FAR/TECO protocol for DMLab- and Minecraft-format long videos (300 frames each).

  PSNR, SSIM, LPIPS  144 context frames, 156 predicted, scored on the predicted frames only
  FVD                36 context frames, 264 generated, on all 300 frames (context included)

ST-LPIPS is scored beside LPIPS (on the same predicted frames) whenever the ``metrics`` extra
is installed; it is not the paper's LPIPS and its figures are not comparable with FAR's.

Videos are each episode's first 300 frames (TECO's files hold exactly 300), with the true
actions. It runs on episodes written by ``train/import_dataset.py``, or any folder of episodes
of at least 300 frames. One known difference from FAR's numbers: FAR scores frames after an
H.264 round trip of the videos, we score the frames as generated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from far_world.data.episodes import iter_episodes
from far_world.evaluation.fvd import fvd
from far_world.evaluation.metrics import psnr, ssim
from far_world.evaluation.perceptual import lpips_distance
from far_world.evaluation.rollouts import load_windows, rollout
from far_world.evaluation.video_metrics import MetricNets, fvd_skip_reason
from far_world.world import WorldModel


@dataclass(frozen=True)
class TecoProtocol:
    context: int = 144
    predicted: int = 156
    fvd_context: int = 36
    fvd_generated: int = 264

    @property
    def frames(self) -> int:
        """Frames a video needs (both parts of the protocol use the same length)."""
        return max(self.context + self.predicted, self.fvd_context + self.fvd_generated)

    def scaled(self, factor: float) -> "TecoProtocol":
        """The protocol at ``factor`` of its lengths (at least 2 context and 2 predicted frames)."""
        lengths = ("context", "predicted", "fvd_context", "fvd_generated")
        return replace(self, **{k: max(2, round(getattr(self, k) * factor)) for k in lengths})


@dataclass
class TecoReport:
    protocol: TecoProtocol
    videos: int
    psnr: float
    ssim: float
    lpips: float | None
    fvd: float | None
    psnr_per_frame: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    st_lpips: float | None = None
    fvd_network: str | None = None

    def to_dict(self) -> dict:
        p = self.protocol
        return {
            "protocol": asdict(p),
            "videos": self.videos,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "lpips": self.lpips,
            "st_lpips": self.st_lpips,
            "fvd": self.fvd,
            # FVD compares this many real and this many generated videos of p.frames frames.
            "fvd_videos": self.videos if self.fvd is not None else 0,
            "fvd_network": self.fvd_network,
            "psnr_per_frame": self.psnr_per_frame,
            "notes": self.notes,
        }


def count_videos(folder: str | Path, protocol: TecoProtocol, max_videos: int) -> int:
    """How many episodes of ``folder`` are long enough for the protocol (at most ``max_videos``)."""
    long_enough = sum(len(ep.frames) >= protocol.frames for _, ep in iter_episodes(folder, mmap=True))
    return min(long_enough, max_videos)


def evaluate_teco(
    world: WorldModel,
    folder: str | Path,
    protocol: TecoProtocol = TecoProtocol(),
    max_videos: int = 8,
    nets: MetricNets | None = None,
    seed: int = 0,
    batch_size: int = 8,
    bar: tqdm | None = None,
) -> TecoReport:
    """Both parts of the protocol on the first ``max_videos`` long-enough episodes of ``folder``.

    The FVD part's 264-frame rollouts are made only when ``nets`` has an I3D detector.
    """
    nets = nets or MetricNets()
    windows = load_windows(folder, protocol.context, protocol.predicted, max_windows=max_videos, at_start=True)
    predicted = rollout(world, windows, seed=seed, batch_size=batch_size, bar=bar)
    truth = windows.future_frames
    per_frame = psnr(truth, predicted)
    notes = []
    lp = None if nets.lpips is None else float(lpips_distance(nets.lpips, truth, predicted).mean())
    st = None if nets.stlpips is None else float(lpips_distance(nets.stlpips, truth, predicted).mean())
    if nets.lpips is None:
        notes.append("LPIPS skipped: no --lpips-weights given")
    if nets.missing():
        notes.append(nets.missing())
    score_fvd = None
    skip = fvd_skip_reason(len(windows), protocol.fvd_context + protocol.fvd_generated)
    if nets.i3d is not None and skip:
        notes.append(skip)
    elif nets.i3d is not None:
        fvd_windows = load_windows(folder, protocol.fvd_context, protocol.fvd_generated, max_windows=max_videos, at_start=True)
        generated = rollout(world, fvd_windows, seed=seed, batch_size=batch_size, bar=bar)
        real = np.concatenate([fvd_windows.context_frames, fvd_windows.future_frames], axis=1)
        fake = np.concatenate([fvd_windows.context_frames, generated], axis=1)
        if bar is not None:
            bar.set_postfix_str(f"teco: FVD on {len(fvd_windows)} videos x 2 sets")
        score_fvd = fvd(nets.i3d, real, fake)
    notes.append("frames scored as generated (FAR scores them after an H.264 round trip)")
    return TecoReport(
        protocol, len(windows), float(per_frame.mean()), float(ssim(truth, predicted).mean()), lp, score_fvd,
        per_frame.mean(0).tolist(), notes, st, nets.i3d_name if score_fvd is not None else None,
    )  # fmt: skip
