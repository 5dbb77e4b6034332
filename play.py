"""Play a learned world with the keyboard (pygame), or let an agent play it headless.

    python play.py                                # the released default world
    python play.py --ckpt minecraft.pt            # any far-world checkpoint
    python play.py --side-by-side                 # the real world next to the model, same actions
    python play.py --record data/my_play          # save your play as episodes (a dataset)
    python play.py --headless --frames 300 --policy random --record out.mp4

Keys: the action keys shown on screen; R reset, P pause, . one step while paused,
V start/stop recording video, [ ] fewer/more sampling steps, M human <-> agent, Esc quit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint file (default: the released default world)")
    p.add_argument("--policy", default="human", help="'human', 'random', or a saved SB3 agent (.zip)")
    p.add_argument("--agent", default="random", help="the agent that M switches to ('random' or an SB3 .zip)")
    p.add_argument("--record", default=None, help="DIR: save play as episodes; FILE.mp4: record a video")
    p.add_argument("--side-by-side", action="store_true", help="run the real world next to the model")
    p.add_argument("--headless", action="store_true", help="no window (SDL dummy driver); use with --frames")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate cap of the window (and of videos)")
    p.add_argument("--scale", type=int, default=8, help="window pixels per frame pixel")
    p.add_argument("--steps", type=int, default=None, help="sampling steps per frame (default: checkpoint's)")
    p.add_argument("--context", default="prompts", help="'prompts' or a folder of episodes to start from")
    p.add_argument("--seed", type=int, default=0, help="seed of the world (prompt choice and sampling noise)")
    p.add_argument("--policy-seed", type=int, default=None, help="seed of the random agent (default: --seed)")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


@dataclass
class HUD:
    fps: float = 0.0
    frame_index: int = 0
    context_length: int = 0
    sampling_steps: int = 0
    controller: str = "human"
    paused: bool = False
    recording: bool = False


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
        f"steps {hud.sampling_steps}  {hud.controller}"
        + ("  PAUSED" if hud.paused else "")
        + ("  REC" if hud.recording else "")
    )
    y = panels[0][1].shape[0] * scale + 4
    screen.blit(font.render(status, True, (255, 255, 255)), (4, y))
    for i, line in enumerate(legend):
        screen.blit(font.render(line, True, (180, 180, 180)), (4 + (i % 2) * 300, y + 20 + (i // 2) * 16))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        if args.policy == "human":
            args.policy = "random"
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    from envs.far_world_env import FARWorldEnv
    from far_world.data.episodes import DatasetMeta
    from far_world.game.agents import load_agent
    from far_world.game.keymap import build_keymap
    from far_world.game.recording import EpisodeRecorder, VideoRecorder
    from far_world.world import WorldModel

    world = WorldModel.load(args.ckpt, device=args.device, batch_size=1)
    env = FARWorldEnv(world_model=world, context=args.context, sampling_steps=args.steps, timing=True)
    keymap = build_keymap(world.action_names)
    agents = {"human": None}
    agent_spec = args.policy if args.policy != "human" else args.agent
    agents["agent"] = load_agent(agent_spec, env.action_space, seed=args.seed if args.policy_seed is None else args.policy_seed)
    controller = "human" if args.policy == "human" else "agent"

    real_env = None
    if args.side_by_side:
        from envs.real import make_real_world

        real_env = make_real_world(world.world_spec, seed=args.seed)

    video_path = args.record if args.record and args.record.endswith(".mp4") else None
    episodes = None
    if args.record and not video_path:
        episodes = EpisodeRecorder(args.record, DatasetMeta(
            world=world.world_spec, action_names=world.action_names, action_space=world.action_space_spec,
            resolution=list(world.resolution), policy="human play (play.py)", seed=args.seed,
        ))

    pygame.init()
    panels_count = 2 if real_env is not None else 1
    h, w = world.resolution
    size = (w * args.scale * panels_count, h * args.scale + 24 + 16 * ((len(keymap.legend()) + 1) // 2) + 4)
    screen = pygame.display.set_mode(size) if not args.headless else pygame.Surface(size)
    pygame.display.set_caption(f"far-world: {world.world_spec}")
    font = pygame.font.Font(None, 20)
    clock = pygame.time.Clock()
    video = VideoRecorder(video_path, args.fps, (size[1], size[0])) if video_path else None
    video_count = 0

    def reset(seed: int | None = None):
        if real_env is not None:
            context_len = world.prompt_frames.shape[1]
            frame, _ = real_env.reset(seed=seed)
            frames, actions = [frame], []
            for _ in range(context_len - 1):
                action = real_env.action_space.sample()
                frame, *_ = real_env.step(action)
                frames.append(frame)
                actions.append(action)
            obs, _ = env.reset(seed=seed, options={"frames": np.stack(frames), "actions": np.array(actions)})
            return obs, frame
        obs, _ = env.reset(seed=seed)
        return obs, None

    obs, real_obs = reset(args.seed)
    if episodes is not None:
        episodes.start(obs)
    hud = HUD(sampling_steps=world.sampling_steps, controller=controller, recording=video is not None)
    frames_done, paused, step_once, running = 0, False, False, True
    held: set[str] = set()  # key names held down, tracked from events (works for every key code)
    last_time = time.perf_counter()
    while running:
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                running = False
            elif event.type == pygame.KEYUP:
                held.discard(pygame.key.name(event.key))
            elif event.type == pygame.KEYDOWN:
                key = pygame.key.name(event.key)
                held.add(key)
                if key in ("escape", "q") and key not in keymap.keys:
                    running = False
                elif key == "r" and "r" not in keymap.keys:
                    obs, real_obs = reset()
                    if episodes is not None:
                        episodes.start(obs)
                elif key == "p" and "p" not in keymap.keys:
                    paused = not paused
                elif key == "." and paused:
                    step_once = True
                elif key == "v" and "v" not in keymap.keys:
                    if video is None:
                        video_count += 1
                        video = VideoRecorder(f"play_{time.strftime('%Y%m%d_%H%M%S')}_{video_count}.mp4", args.fps, (size[1], size[0]))
                    else:
                        video.close()
                        video = None
                elif key in ("[", "]"):
                    world.configure(sampling_steps=max(1, world.sampling_steps + (1 if key == "]" else -1)))
                elif key == "m":
                    controller = "agent" if controller == "human" else "human"
        if paused and not step_once:
            clock.tick(30)
            hud.paused = True
        else:
            step_once = False
            hud.paused = paused
            if controller == "human":
                action = keymap.action_for(held)
            else:
                action = agents["agent"].act(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            if real_env is not None:
                real_obs, _, real_done, real_trunc, _ = real_env.step(action)
                if real_done or real_trunc:
                    terminated = True
            if episodes is not None:
                episodes.add(action, obs, reward, terminated)
            frames_done += 1
            hud.frame_index, hud.context_length = info["frame_index"], info["context_length"]
            if terminated or truncated:
                obs, real_obs = reset()
                if episodes is not None:
                    episodes.start(obs)
        now = time.perf_counter()
        hud.fps = 0.9 * hud.fps + 0.1 / max(now - last_time, 1e-6) if hud.fps else 1.0 / max(now - last_time, 1e-6)
        last_time = now
        hud.sampling_steps, hud.controller, hud.recording = world.sampling_steps, controller, video is not None
        panels = [("model", obs)] + ([("real", real_obs)] if real_env is not None else [])
        draw(pygame, screen, font, panels, hud, keymap.legend(), args.scale)
        if video is not None and not hud.paused:
            video.write(pygame.surfarray.array3d(screen).transpose(1, 0, 2))
        if not args.headless:
            pygame.display.flip()
            clock.tick(args.fps)
        if args.frames is not None and frames_done >= args.frames:
            running = False

    if episodes is not None:
        episodes.finish()
        print(f"saved {len(episodes.saved)} episodes to {args.record}")
    if video is not None:
        video.close()
        print(f"wrote {video.frames_written} frames to {video.path}")
    env.close()
    if real_env is not None:
        real_env.close()
    pygame.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
