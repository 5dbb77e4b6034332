"""One collector worker: a world, a policy per episode, episodes written straight to disk.

Workers run in spawned processes (MuJoCo's EGL context and vizdoom's game process do not
survive a fork) and talk to the main process through two queues: tasks in, events out. They
write their own episode files, so frames never cross a process boundary.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from far_world.action_spaces import spec_from_space
from far_world.collection.policies import Policy, make_policy
from far_world.data.episodes import Episode, save_episode
from far_world.envs.real import RealWorld, make_real_world

PROGRESS_EVERY = 32  # frames between progress events: smooth enough, cheap at thousands of frames/s

# Events a worker sends, as (kind, worker id, payload):
#   ("ready", w, world description dict)   world built, waiting for tasks
#   ("frames", w, n)                       n more frames collected
#   ("episode", w, (index, steps, seconds)) episode written (seconds: reset, steps and save)
#   ("error", w, traceback text)
Event = tuple[str, int, Any]


def describe_world(env: RealWorld) -> dict[str, Any]:
    """What ``meta.json`` records about a world, read from a live instance."""
    return {
        "world": env.world_name,
        "action_names": list(env.action_names),
        "action_space": spec_from_space(env.action_space),
        "resolution": [int(s) for s in env.observation_space.shape[:2]],
        "frame_skip": int(env.frame_skip),
        "extras": list(env.extra_keys),
    }


def collect_episode(
    env: RealWorld, policy: Policy, steps: int, world_seed: int, on_frames: Callable[[int], None] | None = None
) -> Episode:
    """Run one episode of at most ``steps`` steps; it ends early when the world ends it.

    Returns frames (T+1, 64, 64, 3) with the world's ``extra_keys`` as per-frame extras (T+1, ...).
    ``on_frames(n)`` hears about progress every few frames (the counts sum to T+1).
    """
    obs, info = env.reset(seed=world_seed)
    policy.reset(info)
    frames = np.empty((steps + 1, *obs.shape), np.uint8)
    frames[0] = obs
    actions = np.zeros(steps, np.int64)
    rewards = np.zeros(steps, np.float32)
    terminated = np.zeros(steps, np.bool_)
    extras = {key: [np.asarray(info[key])] for key in env.extra_keys}
    taken, unreported = 0, 1
    while taken < steps:
        action = policy.act(info)
        obs, reward, ended, truncated, info = env.step(action)
        frames[taken + 1], actions[taken], rewards[taken], terminated[taken] = obs, action, reward, ended
        for key, rows in extras.items():
            rows.append(np.asarray(info[key]))
        taken += 1
        unreported += 1
        if on_frames is not None and unreported >= PROGRESS_EVERY:
            on_frames(unreported)
            unreported = 0
        if ended or truncated:
            break
    if on_frames is not None and unreported:
        on_frames(unreported)
    return Episode(
        frames[: taken + 1], actions[:taken], rewards[:taken], terminated[:taken],
        {key: np.stack(rows) for key, rows in extras.items()},
    )


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Turn terminate() into an exception, so that `finally` closes the world: vizdoom's game
    # process ignores SIGTERM and would outlive a worker killed outright.
    raise SystemExit(128 + signum)


def worker_main(
    worker_id: int, world: str, world_kwargs: dict[str, Any], policy_name: str, steps: int, tasks: Any, events: Any
) -> None:
    """Process entry point: build the world, then collect every task from ``tasks`` until a None."""
    # Ctrl-C reaches every process of the terminal: the main process alone handles it (and
    # terminates the workers), so that a worker never dies in the middle of its world's calls.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def report(frames: int) -> None:
        events.put(("frames", worker_id, frames))

    env = None
    try:
        env = make_real_world(world, **world_kwargs)
        # A policy this world cannot drive (retrace without steering actions) fails here, before
        # the main process writes meta.json.
        make_policy(policy_name, env.action_names, np.random.default_rng(0), env.cell_size)
        events.put(("ready", worker_id, describe_world(env)))
        for task in iter(tasks.get, None):
            start = time.perf_counter()
            rng = np.random.default_rng(task.policy_seed)
            policy = make_policy(policy_name, env.action_names, rng, env.cell_size)
            episode = collect_episode(env, policy, steps, task.world_seed, on_frames=report)
            save_episode(task.path, episode)
            events.put(("episode", worker_id, (task.index, episode.num_steps, time.perf_counter() - start)))
    except SystemExit:
        raise
    except BaseException:
        events.put(("error", worker_id, traceback.format_exc()))
    finally:
        if env is not None:
            env.close()
