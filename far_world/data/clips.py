"""Training samples: random windows of consecutive frames (FAR) and random single frames (autoencoder).

Both read episodes memory-mapped, so only the sampled windows are read from disk and a
dataset larger than RAM works; both work over a raw episode folder (pixels) or a latent
cache (latents, see :mod:`far_world.data.latents`).

Sampling is a pure function of ``(seed, step)``: an interrupted run that resumes at step k
draws exactly the batches it would have drawn, and DDP ranks each take their slice of the
same global batch (concatenated over ranks it equals the single-process batch, whatever the
number of ranks).

A clip is given in the model's convention, where each frame carries what led INTO it:
``actions[:, t]`` = ``episode.actions[s+t-1]`` (likewise rewards and terminated). The first
frame of an episode (s = 0, t = 0) has no incoming action: it gets the null action, whose
index is the number of actions (per component for multi-discrete), the extra row of the
model's action embedding; its reward is 0 and it is not terminal.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import torch

from far_world.action_spaces import nvec_from_spec
from far_world.data.episodes import (
    EXTRA_PREFIX,
    Episode,
    EpisodeError,
    check_real_data,
    episode_paths,
    load_episode,
    read_meta,
)
from far_world.data.latents import CachedEpisode, cached_stems, is_latent_cache, load_cached_episode, read_cache_info

if TYPE_CHECKING:
    from far_world.data.revisits import RevisitWindows

Array: TypeAlias = "np.ndarray | torch.Tensor"
Source: TypeAlias = "str | os.PathLike | Sequence[str | os.PathLike]"


@dataclass
class ClipBatch:
    """B clips of F frames (numpy, or torch after :meth:`to_torch`).

    frames      uint8 (B,F,H,W,3) pixels, or float32 (B,F,C,h,w) latents from a latent cache
    actions     int64 (B,F) or (B,F,K): the action INTO each frame, null for an episode's first
    rewards     float32 (B,F), terminated bool (B,F): of the transition INTO each frame
    episode     int64 (B,) index into the dataset's ``names``; start int64 (B,) first frame index
    extras      per-frame extras asked for, (B,F,...)
    """

    frames: Array
    actions: Array
    rewards: Array
    terminated: Array
    episode: Array
    start: Array
    extras: dict[str, Array] = field(default_factory=dict)

    def to_torch(self, device: str | torch.device = "cpu") -> "ClipBatch":
        """The same batch as torch tensors on ``device`` (frames stay uint8: scaling is the model's job)."""

        def convert(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        arrays = {f.name: convert(getattr(self, f.name)) for f in fields(self) if f.name != "extras"}
        return ClipBatch(**arrays, extras={k: convert(v) for k, v in self.extras.items()})


class EpisodeStore:
    """The valid episodes of a folder, an episode list or a latent cache, opened lazily (memory-mapped).

    At most ``max_open`` episodes stay open (each memory map holds a file descriptor), least
    recently used closed first. Bad files, episodes shorter than ``min_frames`` and episodes
    without the requested ``extras`` are skipped with one warning each (the short ones counted).
    ``action_nvec`` (classes per action component) comes from ``meta.json`` when not given; with
    neither, actions are not checked and :meth:`window` cannot give the null action.
    Episodes that ``meta.json`` labels imagined are refused unless ``allow_imagined``.
    """

    def __init__(
        self,
        source: Source,
        min_frames: int = 1,
        action_nvec: Sequence[int] | None = None,
        extras: Sequence[str] = (),
        resolution: tuple[int, int] | None = None,
        max_open: int = 64,
        allow_imagined: bool = False,
    ) -> None:
        self.is_latent = not isinstance(source, (list, tuple)) and is_latent_cache(source)
        self.cache_dir = Path(source) if self.is_latent else None  # type: ignore[arg-type]
        candidates, meta_folder = self._candidates(source)
        check_real_data(meta_folder, allow_imagined)
        self.action_nvec = tuple(int(n) for n in action_nvec) if action_nvec else _nvec_from_meta(meta_folder)
        self.null_action = None if self.action_nvec is None else np.asarray(self.action_nvec, np.int64)
        self.extras = tuple(extras)
        self.resolution = resolution
        self.max_open = max_open
        self._open_episodes: OrderedDict[int, Episode | CachedEpisode] = OrderedDict()
        self.keys, self.lengths = self._index(candidates, min_frames)

    def _candidates(self, source: Source) -> tuple[list[str | Path], Path]:
        """Entries to index (cache stems or episode paths) and the folder whose meta.json applies."""
        if self.cache_dir is not None:
            if not read_cache_info(self.cache_dir).get("complete", False):
                warnings.warn(f"latent cache {self.cache_dir} is incomplete (an interrupted build?)", stacklevel=3)
            candidates: list[str | Path] = list(cached_stems(self.cache_dir))
            meta_folder = self.cache_dir
        else:
            is_folder = isinstance(source, (str, os.PathLike))
            candidates = list(episode_paths(source) if is_folder else [Path(p) for p in source])  # type: ignore
            meta_folder = Path(candidates[0]).parent if candidates else Path()
        if not candidates:
            raise ValueError(f"no episodes in {source}")
        return candidates, meta_folder

    def _index(self, candidates: list[str | Path], min_frames: int) -> tuple[list[str | Path], np.ndarray]:
        """The usable entries and their frame counts; the others skipped with warnings."""
        keys: list[str | Path] = []
        lengths: list[int] = []
        too_short = 0
        for key in candidates:
            try:
                episode = self._load(key)
                self._check(key, episode)
            except EpisodeError as exc:
                warnings.warn(f"skipping episode: {exc}", stacklevel=3)
                continue
            if len(self._observations(episode)) < min_frames:
                too_short += 1
                continue
            keys.append(key)
            lengths.append(len(self._observations(episode)))
        if too_short:
            warnings.warn(f"skipped {too_short} episodes shorter than {min_frames} frames", stacklevel=3)
        if not keys:
            raise ValueError(f"none of {len(candidates)} episodes is usable (bad, or shorter than {min_frames} frames)")
        return keys, np.asarray(lengths, np.int64)

    @property
    def names(self) -> list[str]:
        """Episode names (file stems), in index order."""
        return [Path(k).stem if isinstance(k, Path) else k for k in self.keys]

    def __len__(self) -> int:
        return len(self.keys)

    def open(self, index: int) -> Episode | CachedEpisode:
        """Episode ``index``, memory-mapped (kept open among the ``max_open`` most recent)."""
        episode = self._open_episodes.get(index)
        if episode is None:
            episode = self._load(self.keys[index])
            self._open_episodes[index] = episode
            if len(self._open_episodes) > self.max_open:
                self._open_episodes.popitem(last=False)
        self._open_episodes.move_to_end(index)
        return episode

    def observations(self, index: int) -> np.ndarray:
        """Frames (N,H,W,3) uint8 or cached latents (N,C,h,w) float16 of episode ``index``."""
        return self._observations(self.open(index))

    def window(self, index: int, start: int, length: int) -> dict[str, np.ndarray]:
        """Frames ``start..start+length-1`` of one episode, with what led into each (module doc)."""
        null = self.null_action
        if null is None:
            raise ValueError("the action space is unknown (no meta.json): pass action_nvec")
        episode = self.open(index)
        obs = self._observations(episode)
        if start < 0 or start + length > len(obs):
            raise IndexError(f"window {start}..{start + length - 1} outside episode {index} of {len(obs)} frames")
        frames = np.array(obs[start : start + length])
        return {
            "frames": frames.astype(np.float32) if self.is_latent else frames,
            "actions": incoming(episode.actions, start, length, null if episode.actions.ndim == 2 else null[0]),
            "rewards": incoming(episode.rewards, start, length, np.float32(0)),
            "terminated": incoming(episode.terminated, start, length, np.False_),
            **{EXTRA_PREFIX + k: np.array(episode.extras[k][start : start + length]) for k in self.extras},
        }

    def __getstate__(self) -> dict:
        # A DataLoader worker gets a copy: pickling open memory maps would copy their whole data.
        state = self.__dict__.copy()
        state["_open_episodes"] = OrderedDict()
        return state

    def _load(self, key: str | Path) -> Episode | CachedEpisode:
        if self.is_latent:
            return load_cached_episode(self.cache_dir, str(key))  # type: ignore[arg-type]
        return load_episode(key, mmap=True, resolution=self.resolution)

    def _observations(self, episode: Episode | CachedEpisode) -> np.ndarray:
        return episode.latents if isinstance(episode, CachedEpisode) else episode.frames

    def _check(self, key: str | Path, episode: Episode | CachedEpisode) -> None:
        """Actions must fit the action space (an out-of-range id would index past the embedding table).

        One component means plain discrete actions (T,); K > 1 components mean (T,K).
        """
        missing = [k for k in self.extras if k not in episode.extras]
        if missing:
            raise EpisodeError(f"{key}: no extras {missing}")
        if self.action_nvec is None:
            return
        actions = np.asarray(episode.actions)
        expected_ndim = 1 if len(self.action_nvec) == 1 else 2
        if actions.ndim != expected_ndim or (actions.ndim == 2 and actions.shape[1] != len(self.action_nvec)):
            raise EpisodeError(f"{key}: actions {actions.shape} do not fit the action space {list(self.action_nvec)}")
        if len(actions) and (actions.min() < 0 or (actions.reshape(len(actions), -1) >= self.null_action).any()):
            raise EpisodeError(f"{key}: action ids outside the action space {list(self.action_nvec)}")


def incoming(steps: np.ndarray, start: int, length: int, fill: np.ndarray | np.generic) -> np.ndarray:
    """Per-step array (T,...) -> per-frame (length,...): entry t is ``steps[start+t-1]``, ``fill`` for frame 0."""
    if start > 0:
        return np.array(steps[start - 1 : start - 1 + length])
    out = np.empty((length, *steps.shape[1:]), steps.dtype)
    out[0] = fill
    out[1:] = steps[: length - 1]
    return out


def _nvec_from_meta(folder: Path) -> tuple[int, ...] | None:
    """Classes per action component from ``meta.json``: (n,) for discrete, nvec for multi-discrete."""
    try:
        meta = read_meta(folder)
    except FileNotFoundError:
        return None
    return nvec_from_spec(meta.action_space)


def _batch_rng(seed: int, step: int) -> np.random.Generator:
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got {seed}, {step}")
    return np.random.default_rng([seed, step])


def _rank_slice(batch_size: int, rank: int, world_size: int) -> slice:
    """Rank's share of a global batch: contiguous, so ranks in order rebuild the global batch."""
    if batch_size % world_size or not 0 <= rank < world_size:
        raise ValueError(f"global batch {batch_size} must split evenly over {world_size} ranks (rank {rank})")
    per_rank = batch_size // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


class ClipDataset:
    """Random windows of ``clip_len`` consecutive frames, uniform over all windows of all episodes.

    ``source``: an episode folder, a list of episode files, or a latent cache folder.
    ``action_nvec``: classes per action component; read from ``meta.json`` when not given.
    Episodes shorter than ``clip_len`` are skipped (one warning with their count).
    """

    def __init__(
        self,
        source: Source,
        clip_len: int,
        seed: int = 0,
        action_nvec: Sequence[int] | None = None,
        extras: Sequence[str] = (),
        resolution: tuple[int, int] | None = None,
        max_open: int = 64,
        allow_imagined: bool = False,
    ) -> None:
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        self.store = EpisodeStore(source, clip_len, action_nvec, extras, resolution, max_open, allow_imagined)
        if self.store.action_nvec is None:
            raise ValueError(f"no meta.json for {source}: pass action_nvec, needed for the null action")
        self.clip_len = clip_len
        self.seed = seed

    @property
    def is_latent(self) -> bool:
        return self.store.is_latent

    @property
    def null_action(self) -> np.ndarray:
        """The null action's index per component, int64 (K,): the number of classes."""
        return self.store.null_action  # type: ignore[return-value]

    @property
    def names(self) -> list[str]:
        """Episode names, indexed by :attr:`ClipBatch.episode`."""
        return self.store.names

    def __len__(self) -> int:
        """Number of episodes."""
        return len(self.store)

    def num_windows(self, clip_len: int | None = None) -> int:
        return int(np.maximum(self.store.lengths - (clip_len or self.clip_len) + 1, 0).sum())

    def sample_batch(
        self,
        batch_size: int,
        step: int,
        rank: int = 0,
        world_size: int = 1,
        clip_len: int | None = None,
        revisits: RevisitWindows | None = None,
        revisit_prob: float = 0.0,
    ) -> ClipBatch:
        """Rank's slice (``batch_size // world_size`` clips) of the global batch of ``step``.

        ``batch_size`` is the global batch. ``clip_len`` overrides the dataset's for this step
        (for random clip lengths: draw it from the step too, so that resuming stays exact);
        windows are then uniform over the episodes long enough for it. With ``revisits``, each
        clip is, with probability ``revisit_prob``, drawn uniformly from the revisit windows of
        that length instead (far_world/data/revisits.py; none at a length within the short window).
        """
        length = clip_len or self.clip_len
        per_episode = np.maximum(self.store.lengths - length + 1, 0)
        ends = np.cumsum(per_episode)
        if ends[-1] == 0:
            raise ValueError(f"no episode has {length} frames")
        picks = _batch_rng(self.seed, step).integers(0, ends[-1], size=batch_size)
        episodes = np.searchsorted(ends, picks, side="right")
        starts = picks - (ends[episodes] - per_episode[episodes])
        if revisits is not None and revisit_prob > 0:
            revisit_episodes, revisit_starts = revisits.windows(length)
            if len(revisit_episodes):
                # Its own stream: [seed, step, 1] and [.., 2] draw the trainer's clip length and distillation.
                rng = np.random.default_rng([self.seed, step, 3])
                chosen = rng.random(batch_size) < revisit_prob
                drawn = rng.integers(0, len(revisit_episodes), size=batch_size)[chosen]
                episodes[chosen], starts[chosen] = revisit_episodes[drawn], revisit_starts[drawn]
        mine = _rank_slice(batch_size, rank, world_size)
        return self.clips(episodes[mine], starts[mine], length)

    def clips(self, episodes: Sequence[int], starts: Sequence[int], clip_len: int | None = None) -> ClipBatch:
        """Chosen windows: episode ``episodes[b]`` from frame ``starts[b]``, ``clip_len`` frames each."""
        length = clip_len or self.clip_len
        windows = [self.store.window(int(e), int(s), length) for e, s in zip(episodes, starts)]
        stacked = {key: np.stack([w[key] for w in windows]) for key in windows[0]}
        return ClipBatch(
            frames=stacked["frames"],
            actions=stacked["actions"],
            rewards=stacked["rewards"],
            terminated=stacked["terminated"],
            episode=np.asarray(episodes, np.int64),
            start=np.asarray(starts, np.int64),
            extras={k: stacked[EXTRA_PREFIX + k] for k in self.store.extras},
        )


class FrameDataset:
    """Random single frames, uniform over all frames of all episodes (the autoencoder's samples).

    ``source`` as for :class:`ClipDataset` (pixels are what an autoencoder needs: a folder of
    episodes); no ``meta.json`` is needed.
    """

    def __init__(
        self,
        source: Source,
        seed: int = 0,
        resolution: tuple[int, int] | None = None,
        max_open: int = 64,
        allow_imagined: bool = False,
    ) -> None:
        self.store = EpisodeStore(source, 1, None, (), resolution, max_open, allow_imagined)
        self.seed = seed
        self._ends = np.cumsum(self.store.lengths)

    def __len__(self) -> int:
        """Number of frames."""
        return int(self._ends[-1])

    def sample_batch(self, batch_size: int, step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rank's slice of the global batch of ``step``: uint8 (B/world_size,H,W,3) (latents if cached)."""
        picks = _batch_rng(self.seed, step).integers(0, len(self), size=batch_size)[
            _rank_slice(batch_size, rank, world_size)
        ]
        episodes = np.searchsorted(self._ends, picks, side="right")
        offsets = picks - (self._ends[episodes] - self.store.lengths[episodes])
        return np.stack([np.array(self.store.observations(int(e))[int(i)]) for e, i in zip(episodes, offsets)])
