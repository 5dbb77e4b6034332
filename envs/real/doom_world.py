"""ViZDoom scenarios, headless: first-person 3D at thousands of frames a second without X or OpenGL."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import vizdoom

from far_world.envs.real.base import RealWorld, to_frame
from far_world.envs.real.errors import UnknownWorldError

DEFAULT_SCENARIO = "health_gathering"
# 4 game tics (35 tics/s) a step: one tic moves the view too little to see at 64x64, four move it
# a few pixels, the usual choice in ViZDoom agents.
DEFAULT_FRAME_SKIP = 4

# Bundled configs that cannot run as a single-player world here, checked with vizdoom 1.3.2.
UNSUPPORTED_SCENARIOS = {
    "cig": "a multiplayer config: the game process exits at start-up without a host",
    "multi_duel": "a multiplayer config: the game process exits at start-up without a host",
    "doom": "needs doom.wad (commercial, not bundled)",
    "doom2": "needs doom2.wad (commercial, not bundled)",
    "freedoom1": "new_episode() never returns with this config",
}

# Readable names; MOVE_LEFT/RIGHT strafe, so turning takes the plain left/right (as in the maze).
BUTTON_NAMES = {
    "MOVE_FORWARD": "forward",
    "MOVE_BACKWARD": "backward",
    "TURN_LEFT": "left",
    "TURN_RIGHT": "right",
    "MOVE_LEFT": "strafe_left",
    "MOVE_RIGHT": "strafe_right",
}
# Modifiers that do nothing alone: a single-button action of them would be a second noop.
MODIFIER_BUTTONS = {"SPEED", "STRAFE"}
POSE_VARIABLES = (vizdoom.GameVariable.POSITION_X, vizdoom.GameVariable.POSITION_Y, vizdoom.GameVariable.ANGLE)


@contextlib.contextmanager
def _working_directory(path: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def bundled_scenarios() -> list[str]:
    """Names of the scenario configs that ship with vizdoom (``doom:NAME`` accepts these)."""
    return sorted(p.stem for p in Path(vizdoom.scenarios_path).glob("*.cfg"))


def build_action_table(buttons: list[str]) -> tuple[list[str], list[list[float]]]:
    """Discrete actions over the scenario's binary buttons: noop, each button alone, forward+turns.

    buttons: the scenario's available button names, in its order -> (names, button vectors). Delta
    (analog) buttons stay 0. For health_gathering: noop, forward, left, right, forward+left,
    forward+right.
    """
    usable = [b for b in buttons if vizdoom.is_binary_button(getattr(vizdoom.Button, b)) and b not in MODIFIER_BUTTONS]
    # Movement first, in a fixed order, so that the same buttons give the same indices everywhere.
    singles = [b for b in BUTTON_NAMES if b in usable] + [b for b in usable if b not in BUTTON_NAMES]
    combos = [("MOVE_FORWARD", turn) for turn in ("TURN_LEFT", "TURN_RIGHT") if "MOVE_FORWARD" in usable and turn in usable]
    names, vectors = ["noop"], [[0.0] * len(buttons)]
    for pressed in [(b,) for b in singles] + combos:
        names.append("+".join(BUTTON_NAMES.get(b, b.lower()) for b in pressed))
        vectors.append([1.0 if b in pressed else 0.0 for b in buttons])
    return names, vectors


class DoomWorld(RealWorld):
    """One ViZDoom scenario as a 64x64 world (160x120 screen, resized).

    Rewards are the scenario's (summed over the skipped tics). An episode is ``terminated`` when
    the game ends it before its timeout (death, goal reached) and ``truncated`` at the timeout.
    ``info["agent_pos"]`` (2,) is in map units (a corridor is about 64 wide), ``info["agent_dir"]``
    (2,) the unit heading; the scenario's own game variables come lower-cased (e.g. ``health``)
    and are recorded as extras too, so that a world model can learn to carry them.
    Once the game has ended there is no screen: the final observation repeats the last one (its
    game variables are the game's final values).
    """

    extra_keys = ("agent_pos", "agent_dir")
    cell_size = 64.0

    def __init__(
        self,
        scenario: str = DEFAULT_SCENARIO,
        seed: int | None = None,
        render_mode: str | None = None,
        frame_skip: int = DEFAULT_FRAME_SKIP,
        hud: bool = False,
    ) -> None:
        if scenario in UNSUPPORTED_SCENARIOS:
            raise UnknownWorldError(f"doom:{scenario} is not supported: {UNSUPPORTED_SCENARIOS[scenario]}")
        config = Path(vizdoom.scenarios_path) / f"{scenario}.cfg"
        if not config.is_file():
            supported = [s for s in bundled_scenarios() if s not in UNSUPPORTED_SCENARIOS]
            raise UnknownWorldError(f"no vizdoom scenario '{scenario}'; bundled: {', '.join(supported)}")
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        game = vizdoom.DoomGame()
        game.load_config(str(config))
        game.set_window_visible(False)
        game.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
        game.set_screen_format(vizdoom.ScreenFormat.RGB24)
        game.set_mode(vizdoom.Mode.PLAYER)
        if hud:
            # The minimal HUD draws the health in large digits in a bottom corner, legible at
            # 64x64: with it a world model can see a death coming (without it, health_gathering's
            # deaths depend on nothing in the frame). Without ``hud`` the scenario's own setting holds.
            game.set_render_hud(True)
            game.set_render_minimal_hud(True)
        # Buffers we never read cost time every tic (and the audio one needs a sound device).
        game.set_audio_buffer_enabled(False)
        game.set_depth_buffer_enabled(False)
        game.set_labels_buffer_enabled(False)
        game.set_automap_buffer_enabled(False)
        scenario_variables = list(game.get_available_game_variables())
        for variable in POSE_VARIABLES:
            if variable not in scenario_variables:
                game.add_available_game_variable(variable)
        variables = list(game.get_available_game_variables())
        self._pose_index = [variables.index(v) for v in POSE_VARIABLES]
        self._scenario_variables = [(v.name.lower(), variables.index(v)) for v in scenario_variables]
        self.extra_keys = (*type(self).extra_keys, *(name for name, _ in self._scenario_variables))
        if seed is not None:
            game.set_seed(int(seed))
        # The game process writes ./_vizdoom.ini and ./_vizdoom/ into the folder it starts in:
        # give each game a folder of its own, so that worlds started side by side (collector
        # workers) do not race to create them, and the user's folder stays clean.
        self._game_dir = tempfile.mkdtemp(prefix="far-world-vizdoom-")
        try:
            with _working_directory(self._game_dir):
                game.init()
        except BaseException:
            shutil.rmtree(self._game_dir, ignore_errors=True)
            raise
        names, self._buttons = build_action_table([b.name for b in game.get_available_buttons()])
        super().__init__(names, frame_skip=frame_skip, render_mode=render_mode)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": round(35 / frame_skip)}
        self.world_name = f"doom:{scenario}"
        self._game = game
        self._info: dict[str, Any] = {}

    def _observe(self) -> tuple[np.ndarray, dict[str, Any]]:
        state = self._game.get_state()
        if state is not None:  # None once the episode has ended: keep the last frame and pose
            self._frame = to_frame(state.screen_buffer)
            values = state.game_variables
            x, y, angle = (float(values[i]) for i in self._pose_index)
            radians = math.radians(angle)
            self._info = {
                "agent_pos": np.array([x, y], np.float32),
                "agent_dir": np.array([math.cos(radians), math.sin(radians)], np.float32),
                **{name: float(values[i]) for name, i in self._scenario_variables},
            }
        else:  # the game's variables outlive its screen: a death's final health is <= 0
            variables = self._game.get_available_game_variables()
            for name, i in self._scenario_variables:
                self._info[name] = float(self._game.get_game_variable(variables[i]))
        return self._frame.copy(), dict(self._info)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._game.set_seed(int(seed))  # takes effect at the next new_episode()
        self._game.new_episode()
        return self._observe()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self._game.make_action(self._buttons[self._check_action(action)], self.frame_skip)
        frame, info = self._observe()
        ended = self._game.is_episode_finished()
        truncated = ended and self._game.is_episode_timeout_reached()
        return frame, float(reward), bool(ended and not truncated), bool(truncated), info

    def close(self) -> None:
        self._game.close()
        shutil.rmtree(self._game_dir, ignore_errors=True)
