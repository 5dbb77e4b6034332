"""Play a learned world with the keyboard (pygame), or let an agent play it headless.

    python play.py                                # the released default world
    python play.py --ckpt minecraft.pt            # any far-world checkpoint
    python play.py --side-by-side                 # the real world next to the model, same actions
    python play.py --side-by-side --record data/my_play   # save the real world's frames as episodes
    python play.py --headless --frames 300 --policy random --record out.mp4
    python play.py --headless --frames 64 --side-by-side --screenshot shot.png   # a picture of the window

``--record DIR`` saves episodes in the dataset format. With ``--side-by-side`` they hold the
real world's frames (a real dataset, labelled with the real world). Without it they hold the
model's imagined frames, labelled ``imagined:<world>``: the training loaders refuse them unless
asked (``--allow-imagined``), because a model trained on its own output learns its own errors.

Keys: the action keys shown on screen; R reset, P pause, . one step while paused,
V start/stop recording video, F12 screenshot, [ ] fewer/more sampling steps, M human <-> agent, Esc quit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADLESS_HINT = "python play.py --headless --frames 300 --record play.mp4"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint file or released world name (default: the released maze)")
    p.add_argument("--policy", default="human", help="'human', 'random', or a saved SB3 agent (.zip)")
    p.add_argument("--agent", default="random", help="the agent that M switches to ('random' or an SB3 .zip)")
    p.add_argument("--record", default=None, help="DIR: save play as episodes; FILE.mp4: record a video")
    p.add_argument("--side-by-side", action="store_true", help="run the real world next to the model")
    p.add_argument("--screenshot", default=None, help="FILE.png: save the window as it was at the last frame")
    p.add_argument("--headless", action="store_true", help="no window (SDL dummy driver); use with --frames")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate cap of the window (and of videos)")
    p.add_argument("--scale", type=int, default=8, help="window pixels per frame pixel")
    p.add_argument("--sampling-steps", type=int, default=None, help="Euler steps per frame (default: checkpoint's)")
    p.add_argument(
        "--guidance", type=float, default=None,
        help="action guidance weight (default: checkpoint's; above 1 the keys bite harder, at a speed cost that "
        "depends on the checkpoint's guidance scope, docs/RESULTS.md)",
    )
    p.add_argument(
        "--guidance-scope", default=None,
        help="what the unguided branch drops: 'all' actions, the new 'frame's only, sharing the context "
        "(cheaper), or the 'history', the context itself (default: checkpoint's)",
    )
    p.add_argument("--guided-steps", type=int, default=None, help="guide the first N Euler steps only (default: checkpoint's)")
    p.add_argument(
        "--start-time", type=float, default=None,
        help="draw each frame from the last one noised to this flow time, in (0, 1] (default: checkpoint's; "
        "below 1 frames are sharper, and below about 0.9 the view stops following the keys, docs/RESULTS.md)",
    )
    p.add_argument("--steps", dest="deprecated_steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--context", default="prompts", help="'prompts' or a folder of episodes to start from")
    p.add_argument("--seed", type=int, default=0, help="seed of the world (prompt choice and sampling noise)")
    p.add_argument("--policy-seed", type=int, default=None, help="seed of the random agent (default: --seed)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if sampling_overrides(args):
        from far_world.model.sampler import SamplingSettings  # torch: only when such a flag is given

        try:
            SamplingSettings(**sampling_overrides(args))  # the one place their ranges are checked
        except ValueError as exc:
            p.error(str(exc))
    if args.deprecated_steps is not None:
        warnings.warn("--steps is deprecated: use --sampling-steps", FutureWarning, stacklevel=2)
        if args.sampling_steps is None:
            args.sampling_steps = args.deprecated_steps
    if args.headless and args.policy == "human":
        args.policy = "random"  # nobody is at the keyboard
    return args


def display_missing() -> bool:
    """True on Linux with no X or Wayland display and no SDL video driver chosen by the user."""
    if not sys.platform.startswith("linux") or os.environ.get("SDL_VIDEODRIVER"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass
class HUD:
    fps: float = 0.0
    frame_index: int = 0
    context_length: int = 0
    sampling_steps: int = 0
    guidance: float = 1.0
    controller: str = "human"
    paused: bool = False
    recording: bool = False
    carried: dict[str, float] = field(default_factory=dict)  # the world's carried game variables (doom's health)


def draw(pygame, screen, font, panels: list[tuple[str, np.ndarray]], hud: HUD, legend: list[str], scale: int):
    """Panels side by side, scaled up, with the overlay and the key legend below them."""
    screen.fill((16, 16, 16))
    x = 0
    for title, frame in panels:
        h, w = frame.shape[:2]
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        screen.blit(pygame.transform.scale(surface, (w * scale, h * scale)), (x, 0))
        screen.blit(font.render(title, True, (255, 255, 0)), (x + 4, 4))
        x += w * scale
    status = (
        f"{hud.fps:5.1f} fps  frame {hud.frame_index}  context {hud.context_length}  "
        f"steps {hud.sampling_steps}  "
        + "".join(f"{name} {value:.0f}  " for name, value in hud.carried.items())
        + (f"guidance {hud.guidance:g}  " if hud.guidance != 1.0 else "")
        + hud.controller
        + ("  PAUSED" if hud.paused else "")
        + ("  REC" if hud.recording else "")
    )
    y = panels[0][1].shape[0] * scale + 4
    screen.blit(font.render(status, True, (255, 255, 255)), (4, y))
    for i, line in enumerate(legend):
        screen.blit(font.render(line, True, (180, 180, 180)), (4 + (i % 2) * 300, y + 20 + (i // 2) * 16))


def episode_recorder(folder: str, world, real_env, seed: int, checkpoint: str):
    """Episodes of the real world (side by side) or, labelled as such, of the imagined one."""
    from far_world.collection.worker import describe_world
    from far_world.data.episodes import IMAGINED_PREFIX, DatasetMeta
    from far_world.game.recording import EpisodeRecorder

    if real_env is not None:
        # Labelled exactly as train/collect.py labels the real world, without its extras.
        described = {**describe_world(real_env), "extras": []}
        meta = DatasetMeta(**described, policy="human play (play.py)", seed=seed)
    else:
        meta = DatasetMeta(
            world=IMAGINED_PREFIX + world.world_spec, action_names=world.action_names,
            action_space=world.action_space_spec, resolution=list(world.resolution),
            policy="human play in the learned world (play.py)", seed=seed,
            info={"imagined": True, "checkpoint": checkpoint},
        )  # fmt: skip
        print(
            f"recording imagined frames as '{meta.world}' in {folder}: training refuses them unless "
            "--allow-imagined; --side-by-side records the real world instead"
        )
    return EpisodeRecorder(folder, meta)


@dataclass
class Worlds:
    """The learned world, optionally the real one beside it, and the episode recorder that follows them."""

    env: Any
    real_env: Any = None
    episodes: Any = None
    obs: np.ndarray | None = None
    real_obs: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def reset(self, seed: int | None = None) -> None:
        """Both worlds restart; side by side, the model starts from the real world's first frames."""
        if self.real_env is None:
            self.obs, self.info = self.env.reset(seed=seed)
            if self.episodes is not None:
                self.episodes.start(self.obs)
            return
        frame, _ = self.real_env.reset(seed=seed)
        if seed is not None:
            self.real_env.action_space.seed(seed)  # the real context's random actions, reproducible too
        if self.episodes is not None:
            self.episodes.start(frame)
        frames, actions = [frame], []
        for _ in range(self.env.world.prompt_frames.shape[1] - 1):
            action = self.real_env.action_space.sample()
            frame, reward, terminated, _, _ = self.real_env.step(action)
            frames.append(frame)
            actions.append(action)
            if self.episodes is not None:
                self.episodes.add(action, frame, reward, terminated)
        self.obs, self.info = self.env.reset(seed=seed, options={"frames": np.stack(frames), "actions": np.array(actions)})
        self.real_obs = frame

    def step(self, action) -> None:
        """One action in both worlds; an episode that ends in either restarts both."""
        self.obs, reward, terminated, truncated, self.info = self.env.step(action)
        if self.real_env is not None:
            self.real_obs, real_reward, real_done, real_truncated, _ = self.real_env.step(action)
            if self.episodes is not None:
                self.episodes.add(action, self.real_obs, real_reward, real_done)
            terminated, truncated = terminated or real_done, truncated or real_truncated
        elif self.episodes is not None:
            self.episodes.add(action, self.obs, reward, terminated)
        if terminated or truncated:
            self.reset()

    def panels(self) -> list[tuple[str, np.ndarray]]:
        return [("model", self.obs)] + ([("real", self.real_obs)] if self.real_env is not None else [])

    def close(self) -> None:
        if self.episodes is not None:
            self.episodes.finish()
        self.env.close()
        if self.real_env is not None:
            self.real_env.close()


def sampling_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling settings given on the command line, beside the steps and guidance weight that
    FARWorldEnv takes itself; the rest keep the checkpoint's defaults."""
    given = {"start_time": args.start_time, "guidance_scope": args.guidance_scope, "guided_steps": args.guided_steps}
    return {key: value for key, value in given.items() if value is not None}


def open_worlds(args: argparse.Namespace) -> Worlds:
    from far_world.envs.far_world_env import FARWorldEnv
    from far_world.released import resolve_checkpoint
    from far_world.world import WorldModel

    world = WorldModel.load(args.ckpt, device=args.device, batch_size=1)
    world.configure(**sampling_overrides(args))
    env = FARWorldEnv(
        world_model=world, context=args.context, sampling_steps=args.sampling_steps, guidance=args.guidance, timing=True
    )
    real_env = None
    if args.side_by_side:
        from far_world.envs.real import make_real_world

        real_env = make_real_world(world.world_spec, seed=args.seed, **world.world_kwargs)
    folder = args.record if args.record and not args.record.endswith(".mp4") else None
    episodes = episode_recorder(folder, world, real_env, args.seed, str(resolve_checkpoint(args.ckpt))) if folder else None
    return Worlds(env, real_env, episodes)


class Controls:
    """What the keyboard does besides actions: pause, single steps, reset, video, sampling steps, controller."""

    def __init__(self, keymap, controller: str) -> None:
        self.keymap = keymap
        self.controller = controller
        self.held: set[str] = set()  # key names held down, tracked from events (works for every key code)
        self.running, self.paused, self.step_once = True, False, False
        self.reset_requested = self.toggle_video = self.screenshot_requested = False
        self.sampling_steps_delta = 0

    def _free(self, key: str) -> bool:
        """Control keys yield to the world's own action keys."""
        return key not in self.keymap.keys

    def handle(self, pygame, event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYUP:
            self.held.discard(pygame.key.name(event.key))
        elif event.type == pygame.KEYDOWN:
            key = pygame.key.name(event.key)
            self.held.add(key)
            if key in ("escape", "q") and self._free(key):
                self.running = False
            elif key == "r" and self._free(key):
                self.reset_requested = True
            elif key == "p" and self._free(key):
                self.paused = not self.paused
            elif key == "." and self.paused:
                self.step_once = True
            elif key == "v" and self._free(key):
                self.toggle_video = True
            elif key == "f12":
                self.screenshot_requested = True
            elif key in ("[", "]"):
                self.sampling_steps_delta += 1 if key == "]" else -1
            elif key == "m":
                self.controller = "agent" if self.controller == "human" else "human"

    def should_step(self) -> bool:
        step = not self.paused or self.step_once
        self.step_once = False
        return step


class Screen:
    """The window (or, headless, an off-screen surface), its overlay, and the video being recorded."""

    def __init__(self, pygame, args: argparse.Namespace, world, keymap, panels: int) -> None:
        h, w = world.resolution
        size = (w * args.scale * panels, h * args.scale + 24 + 16 * ((len(keymap.legend()) + 1) // 2) + 4)
        self.pygame, self.args, self.world, self.keymap = pygame, args, world, keymap
        self.surface = pygame.Surface(size) if args.headless else pygame.display.set_mode(size)
        pygame.display.set_caption(f"far-world: {world.world_spec}")
        self.font, self.clock = pygame.font.Font(None, 20), pygame.time.Clock()
        self.video_size = (size[1], size[0])
        self.video = None
        if args.record and args.record.endswith(".mp4"):
            self.video = self._recorder(args.record)
        self.videos_started = 0
        self.hud = HUD()
        self.last_time = time.perf_counter()

    def _recorder(self, path: str):
        from far_world.game.recording import VideoRecorder

        return VideoRecorder(path, self.args.fps, self.video_size)

    def toggle_video(self) -> None:
        if self.video is None:
            self.videos_started += 1
            self.video = self._recorder(f"play_{time.strftime('%Y%m%d_%H%M%S')}_{self.videos_started}.mp4")
        else:
            self.video.close()
            self.video = None

    def show(self, worlds: Worlds, controls: Controls, stepped: bool) -> None:
        """Draw the frame(s) and the overlay; a stepped frame also goes into the video."""
        now = time.perf_counter()
        rate = 1.0 / max(now - self.last_time, 1e-6)
        hud = self.hud
        hud.fps, self.last_time = (0.9 * hud.fps + 0.1 * rate if hud.fps else rate), now
        hud.frame_index = worlds.info.get("frame_index", 0)
        hud.context_length = worlds.info.get("context_length", 0)
        hud.carried = {name: worlds.info[name] for name in self.world.carried_names if name in worlds.info}
        hud.sampling_steps, hud.guidance, hud.controller = self.world.sampling_steps, self.world.guidance, controls.controller
        hud.paused, hud.recording = not stepped, self.video is not None
        draw(self.pygame, self.surface, self.font, worlds.panels(), hud, self.keymap.legend(), self.args.scale)
        if self.video is not None and stepped:
            self.video.write(self.pygame.surfarray.array3d(self.surface).transpose(1, 0, 2))
        if not self.args.headless:
            self.pygame.display.flip()
            self.clock.tick(self.args.fps)

    def save_picture(self, path: str | None = None) -> str:
        """The window as now drawn, to a PNG (a timestamped name by default)."""
        path = path or f"play_{time.strftime('%Y%m%d_%H%M%S')}.png"
        self.pygame.image.save(self.surface, path)
        print(f"wrote {path}")
        return path

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
            print(f"wrote {self.video.frames_written} frames to {self.video.path}")


def apply_requests(controls: Controls, worlds: Worlds, screen: Screen) -> None:
    """Carry out what the keys asked for since the last frame."""
    if controls.reset_requested:
        controls.reset_requested = False
        worlds.reset()
    if controls.toggle_video:
        controls.toggle_video = False
        screen.toggle_video()
    if controls.screenshot_requested:
        controls.screenshot_requested = False
        screen.save_picture()
    if controls.sampling_steps_delta:
        world = worlds.env.world
        world.configure(sampling_steps=max(1, world.sampling_steps + controls.sampling_steps_delta))
        controls.sampling_steps_delta = 0


def run(args: argparse.Namespace) -> int:
    import pygame

    from far_world.game.agents import load_agent
    from far_world.game.keymap import build_keymap

    worlds = open_worlds(args)
    world = worlds.env.world
    keymap = build_keymap(world.action_names)
    agent_spec = args.policy if args.policy != "human" else args.agent
    agent = load_agent(agent_spec, worlds.env.action_space, seed=args.seed if args.policy_seed is None else args.policy_seed)
    controls = Controls(keymap, "human" if args.policy == "human" else "agent")
    pygame.display.init()  # display and fonts only: the mixer would probe sound devices for nothing
    pygame.font.init()
    try:
        screen = Screen(pygame, args, world, keymap, panels=2 if worlds.real_env is not None else 1)
    except pygame.error as exc:
        print(f"play.py: cannot open a window ({exc}); to play without one: {HEADLESS_HINT}", file=sys.stderr)
        worlds.close()
        pygame.quit()
        return 2

    worlds.reset(args.seed)
    frames_done = 0
    while controls.running and (args.frames is None or frames_done < args.frames):
        for event in pygame.event.get():
            controls.handle(pygame, event)
        apply_requests(controls, worlds, screen)
        stepped = controls.should_step()
        if stepped:
            worlds.step(keymap.action_for(controls.held) if controls.controller == "human" else agent.act(worlds.obs))
            frames_done += 1
        screen.show(worlds, controls, stepped)

    if args.screenshot:
        screen.save_picture(args.screenshot)
    worlds.close()
    if worlds.episodes is not None:
        print(f"saved {len(worlds.episodes.saved)} episodes to {args.record}")
    screen.close()
    pygame.quit()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.headless and display_missing():
        print(f"play.py: no display here (DISPLAY is unset); to play without a window: {HEADLESS_HINT}", file=sys.stderr)
        return 2
    if args.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
