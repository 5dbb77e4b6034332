"""Which episodes a dataset should hold, under which file names and seeds, and which are still missing.

Everything is a pure function of (episode index, dataset seed, test fraction): a rerun of an
interrupted command finds the same names, collects the same episodes and splits them the same
way, and growing a dataset (more ``--episodes``) never moves an episode between splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from far_world.data.episodes import EpisodeError, load_episode
from far_world.envs.real import RESOLUTION


def episode_name(index: int) -> str:
    return f"ep_{index:06d}.npz"


def split_of(index: int, test_fraction: float) -> str:
    """'test' or 'train' for episode ``index``.

    Episode i >= 1 is a test episode when ceil(i*f) > ceil((i-1)*f): test episodes are spread
    evenly (f=0.1: 1, 11, 21, ...), every prefix of N episodes holds ceil((N-1)*f) of them, so two
    episodes already give one of each, and a longer run keeps the split of a shorter one.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if index < 1:
        return "train"
    # Exact rational arithmetic: with floats, ceil(10 * 0.7) is 8.
    f = Fraction(test_fraction).limit_denominator(10**6)
    return "test" if _ceil_times(index, f) > _ceil_times(index - 1, f) else "train"


def _ceil_times(i: int, f: Fraction) -> int:
    return -((-i * f.numerator) // f.denominator)


def episode_path(out: str | Path, index: int, test_fraction: float) -> Path:
    return Path(out) / split_of(index, test_fraction) / episode_name(index)


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """(world seed, policy seed) of episode ``index`` of a dataset with seed ``seed``.

    SeedSequence with the index as spawn key gives independent streams per episode; the world
    seed is kept to 31 bits, which every engine here accepts.
    """
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(2, np.uint64)
    return int(state[0] & 0x7FFFFFFF), int(state[1])


@dataclass(frozen=True)
class EpisodeTask:
    """One episode to collect: pickled to a worker process."""

    index: int
    world_seed: int
    policy_seed: int
    path: str


@dataclass
class CollectionPlan:
    todo: list[EpisodeTask] = field(default_factory=list)
    done: list[int] = field(default_factory=list)  # indices already on disk and valid
    invalid: list[str] = field(default_factory=list)  # why each file on disk will be rewritten


def existing_episode_problem(path: Path, steps: int, resolution: tuple[int, int] = RESOLUTION) -> str | None:
    """None when ``path`` holds a valid episode of at most ``steps`` steps, else what is wrong."""
    try:
        episode = load_episode(path, resolution=resolution)
    except EpisodeError as exc:
        return str(exc)
    if episode.num_steps > steps:
        return f"{path}: {episode.num_steps} steps, this run collects at most {steps}"
    return None


def plan_collection(
    out: str | Path, episodes: int, steps: int, seed: int, test_fraction: float,
    resolution: tuple[int, int] = RESOLUTION,
) -> CollectionPlan:
    """Episodes 0..episodes-1 split into those on disk and valid (frames of ``resolution``), and
    the tasks still to run."""
    plan = CollectionPlan()
    for index in range(episodes):
        path = episode_path(out, index, test_fraction)
        if path.exists():
            problem = existing_episode_problem(path, steps, resolution)
            if problem is None:
                plan.done.append(index)
                continue
            plan.invalid.append(problem)
        plan.todo.append(EpisodeTask(index, *episode_seeds(seed, index), str(path)))
    return plan


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Delete the temporary files of episode writes that a killed run left behind."""
    removed = []
    for split in ("train", "test"):
        for tmp in (Path(out) / split).glob(".ep_*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
