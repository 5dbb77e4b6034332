"""Minecraft Indev (``minecraft-python``): real Minecraft terrain, trees, water and sky, first person.

The game needs numpy<2, so it runs in its own interpreter (``envs/real/minecraft_venv.py``)
as a child process (``minecraft_server.py``) that this env drives over a pipe. Every reset
starts a fresh game process, because only a fresh process replays a seed bit for bit; the
next one is started while the current episode runs, so that its start-up (imports, OpenGL,
textures: a few seconds) is mostly hidden. Every read from the game has a deadline: a game
that dies or hangs raises :class:`GameProcessError` with the end of its log, and a reset
whose game fails to start is retried once with a new process.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import gymnasium
import numpy as np

from far_world.envs.real import minecraft_protocol as protocol
from far_world.envs.real.base import RealWorld, to_frame
from far_world.envs.real.errors import MissingWorldPackageError
from far_world.envs.real.minecraft_venv import INSTALL_HINT, game_python

SERVER = Path(__file__).with_name("minecraft_server.py")
READY_TIMEOUT_S = 180.0  # imports, OpenGL and textures: 2-6 s here, far more on a crowded machine
RESET_TIMEOUT_S = 180.0  # level generation: 2-9 s here
STEP_TIMEOUT_S = 60.0
LOG_TAIL_CHARS = 3000


class GameProcessError(RuntimeError):
    """The game process died, hung or reported an error (the message ends with its log)."""


def _game_environment(home: str) -> dict[str, str]:
    env = dict(os.environ)
    # A home of its own: the game keeps options.txt in ~/.minecraft, and a user's settings there
    # (render distance, view bobbing) would change the frames.
    env["HOME"] = home
    # Mesa's llvmpipe: one thread is faster here (the frames are tiny) and gives the same pixels.
    env.setdefault("LP_NUM_THREADS", "1")
    env.pop("PYTHONPATH", None)  # the project's packages must not leak into the game's numpy<2
    return env


class GameProcess:
    """One game process: start it, wait for READY, play one episode, close it."""

    def __init__(self, python: Path, settings: dict[str, Any], script: Path = SERVER) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile(prefix="far-world-minecraft-log-")
        self.home = tempfile.mkdtemp(prefix="far-world-minecraft-")
        os.mkdir(os.path.join(self.home, ".minecraft"))
        self.process = subprocess.Popen(
            [str(python), str(script), json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=_game_environment(self.home),
        )
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - LOG_TAIL_CHARS))
        return self.log.read().decode(errors="replace")

    def _fail(self, what: str) -> GameProcessError:
        self.kill()
        code = self.process.returncode
        status = f"exit code {code}" if code is not None and code >= 0 else f"killed by signal {-(code or 0)}"
        return GameProcessError(
            f"Minecraft game process {self.pid} {what} ({status}); its log ends:\n{self.log_tail()}"
        )

    def _read(self, size: int, deadline: float, what: str) -> bytes:
        fd = self.process.stdout.fileno()
        chunks, left = [], size
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise self._fail(f"sent nothing for too long while {what}")
            chunk = os.read(fd, left)
            if not chunk:
                raise self._fail(f"exited while {what}")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def receive(self, timeout: float, what: str) -> tuple[bytes, bytes]:
        """The next reply (kind, payload); an ERROR reply raises with the game's traceback."""
        deadline = time.monotonic() + timeout
        kind, length = protocol.REPLY_HEADER.unpack(self._read(protocol.REPLY_HEADER.size, deadline, what))
        payload = self._read(length, deadline, what)
        if kind == protocol.REPLY_ERROR:
            self.kill()
            raise GameProcessError(
                f"Minecraft game process {self.pid} failed while {what}:\n{payload.decode(errors='replace')}\n"
                f"its log ends:\n{self.log_tail()}"
            )
        return kind, payload

    def send(self, kind: bytes, argument: int, what: str) -> None:
        try:
            self.process.stdin.write(protocol.encode_command(kind, argument))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._fail(f"closed its input while {what}") from None

    def wait_ready(self) -> None:
        if not self.ready:
            kind, _ = self.receive(READY_TIMEOUT_S, "starting")
            if kind != protocol.REPLY_READY:
                raise self._fail(f"answered {kind!r} instead of READY")
            self.ready = True

    def request_frame(
        self, kind: bytes, argument: int, timeout: float, what: str
    ) -> tuple[tuple[float, ...], memoryview]:
        self.send(kind, argument, what)
        reply, payload = self.receive(timeout, what)
        if reply != protocol.REPLY_FRAME:
            raise self._fail(f"answered {reply!r} instead of a frame while {what}")
        return protocol.decode_frame(payload)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """End the game (it keeps nothing worth a graceful exit) and remove its files."""
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.log):
            if not stream.closed:
                stream.close()
        shutil.rmtree(self.home, ignore_errors=True)


def pose_info(pose: tuple[float, ...]) -> dict[str, np.ndarray]:
    """The player's pose as ``info`` arrays: ``pose`` (x, y, z, yaw, pitch) with yaw in
    [-180, 180); ``agent_pos`` (x, z) and ``agent_dir`` (unit heading in the x-z plane), the
    maze's keys, so that revisit scoring works unchanged. Units are blocks and degrees; as in
    Minecraft Classic and Indev, yaw 0 faces -z and yaw grows turning right (towards +x), so
    the heading is (sin yaw, -cos yaw), and a right turn is counter-clockwise in (x, z)."""
    x, y, z, yaw, pitch = pose
    yaw = (yaw + 180.0) % 360.0 - 180.0
    radians = math.radians(yaw)
    return {
        "pose": np.array([x, y, z, yaw, pitch], np.float32),
        "agent_pos": np.array([x, z], np.float32),
        "agent_dir": np.array([math.sin(radians), -math.cos(radians)], np.float32),
    }


class MinecraftWorld(RealWorld):
    """Minecraft Indev levels (128x128 blocks, inland terrain, creative mode, no mobs), seeded.

    Actions (:data:`~far_world.envs.real.minecraft_protocol.ACTIONS`) follow MineRL's keyboard and camera:
    move, strafe, jump (and forward+jump, to climb a block), turn and look in 15-degree steps
    (pitch kept within 45 degrees of level), attack (break the block in view) and use (place a
    dirt block). A step holds the action for 2 game ticks (10 steps per game second).
    ``resolution`` (H, W) is the frame size; the game renders ``supersample`` times larger and
    the frame is area-averaged down, which keeps far textures from flickering. Rewards are 0
    and episodes never end on their own (use a time limit). ``info`` holds the pose (see
    :func:`pose_info`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20 // protocol.FRAME_SKIP}
    world_name = "minecraft"
    extra_keys = ("pose", "agent_pos", "agent_dir")
    cell_size = 1.0  # one block

    def __init__(
        self,
        seed: int | None = None,
        render_mode: str | None = None,
        resolution: tuple[int, int] | list[int] = (64, 64),
        supersample: int = 2,
    ) -> None:
        python = game_python()
        if python is None:
            raise MissingWorldPackageError("minecraft", "minecraft-python==0.31.20100130", hint=INSTALL_HINT)
        height, width = (int(s) for s in resolution)
        if height < 8 or width < 8 or supersample < 1:
            raise ValueError(f"need a resolution of at least 8x8 and supersample >= 1, got {resolution}, {supersample}")
        super().__init__(list(protocol.ACTIONS), frame_skip=protocol.FRAME_SKIP, render_mode=render_mode)
        self.resolution = (height, width)
        self.observation_space = gymnasium.spaces.Box(0, 255, (height, width, 3), np.uint8)
        self._frame = np.zeros((height, width, 3), np.uint8)
        self._python = python
        self._settings = {"width": width * supersample, "height": height * supersample}
        self._game: GameProcess | None = None
        self._spare: GameProcess | None = None
        if seed is not None:
            self._np_random, self._np_random_seed = gymnasium.utils.seeding.np_random(seed)

    def _start(self) -> GameProcess:
        return GameProcess(self._python, self._settings)

    def _observe(self, pose: tuple[float, ...], pixels: memoryview) -> tuple[np.ndarray, dict[str, Any]]:
        h, w = self._settings["height"], self._settings["width"]
        image = np.frombuffer(pixels, np.uint8).reshape(h, w, 3)
        self._frame = to_frame(image, self.resolution)
        return self._frame.copy(), pose_info(pose)

    def _new_episode(self, seed: int) -> tuple[tuple[float, ...], memoryview]:
        """A fresh game (the spare, when one is ready) playing level ``seed``; one retry."""
        for attempt in range(2):
            game, self._spare = (self._spare or self._start()), None
            self._spare = self._start()  # starts up while this episode runs
            try:
                game.wait_ready()
                frame = game.request_frame(protocol.CMD_RESET, seed, RESET_TIMEOUT_S, f"making level {seed}")
            except GameProcessError as exc:
                game.close()
                if attempt == 1:
                    raise
                print(f"minecraft: retrying the reset with a new game process after: {exc}", file=sys.stderr)
                continue
            self._game = game
            return frame
        raise AssertionError("unreachable")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        if self._game is not None:
            self._game.close()
            self._game = None
        return self._observe(*self._new_episode(int(seed) & 0x7FFFFFFF))

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._game is None:
            raise RuntimeError("MinecraftWorld.step() before reset()")
        index = self._check_action(action)
        what = f"stepping ({self.action_names[index]})"
        pose, pixels = self._game.request_frame(protocol.CMD_STEP, index, STEP_TIMEOUT_S, what)
        frame, info = self._observe(pose, pixels)
        return frame, 0.0, False, False, info

    @property
    def game_pid(self) -> int | None:
        """The process id of the game playing the current episode (None before a reset)."""
        return None if self._game is None else self._game.pid

    def close(self) -> None:
        for game in (self._game, self._spare):
            if game is not None:
                game.close()
        self._game = self._spare = None
