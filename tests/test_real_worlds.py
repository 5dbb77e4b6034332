"""The real worlds behind one surface: 64x64 uint8 frames, named Discrete actions, pose in info, clear errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from far_world.envs.real import MissingWorldPackageError, UnknownWorldError, canonical_world_spec, make_real_world


def heading_deg(info: dict) -> float:
    return math.degrees(math.atan2(info["agent_dir"][1], info["agent_dir"][0]))


def check_surface(env, obs: np.ndarray, info: dict) -> None:
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert isinstance(env.action_space, gymnasium.spaces.Discrete)
    assert len(env.action_names) == env.action_space.n
    assert env.frame_skip >= 1
    for key in env.extra_keys:
        assert key in info
    np.testing.assert_array_equal(env.render(), obs)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("quake", "unknown world"),
        ("minecraft:big", "takes no"),
        ("crafter:big", "takes no"),
        pytest.param("maze:7x7", "no '7x7' maze; sizes: 9x9, 11x11, 13x13, 15x15", marks=pytest.mark.worlds),
        ("gym", "needs a name"),
        pytest.param("doom:no_such_map", "bundled: ", marks=pytest.mark.worlds),
        pytest.param("doom:doom2", "not supported", marks=pytest.mark.worlds),
        ("gym:NoSuchEnv-v0", "gym:NoSuchEnv-v0"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(UnknownWorldError, match=message):
        make_real_world(spec)


def test_canonical_specs() -> None:
    assert canonical_world_spec("doom") == "doom:health_gathering"
    assert canonical_world_spec(" crafter ") == "crafter"
    assert canonical_world_spec("gym:CartPole-v1") == "gym:CartPole-v1"
    # The 9x9 maze keeps the label that the released world and older datasets carry.
    assert canonical_world_spec("maze") == canonical_world_spec("maze:9x9") == "maze"
    assert canonical_world_spec("maze:13x13") == "maze:13x13"


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes `import crafter` fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "crafter", None)
    monkeypatch.delitem(sys.modules, "far_world.envs.real.crafter_world", raising=False)
    with pytest.raises(MissingWorldPackageError, match=r'crafter.*pip install -e "\.\[worlds\]"'):
        make_real_world("crafter")


@pytest.mark.worlds
def test_doom_action_table_names_and_skips_modifiers() -> None:
    from far_world.envs.real.doom_world import build_action_table

    names, vectors = build_action_table(["TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD", "SPEED", "TURN_LEFT_RIGHT_DELTA"])
    assert names == ["noop", "forward", "left", "right", "forward+left", "forward+right"]
    assert vectors[names.index("forward+left")] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert all(v[3] == 0.0 and v[4] == 0.0 for v in vectors)  # modifier and delta buttons never pressed


@pytest.mark.worlds
def test_doom_world() -> None:
    env = make_real_world("doom", seed=3, render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=3)
        check_surface(env, obs, info)
        assert env.world_name == "doom:health_gathering" and env.frame_skip == 4
        assert env.action_names == ["noop", "forward", "left", "right", "forward+left", "forward+right"]
        before = heading_deg(info)
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(env.action_names.index("left"))
        assert 5.0 < (heading_deg(info) - before) % 360 < 90.0  # left turns counter-clockwise
        start = info["agent_pos"].copy()
        frames = [obs]
        for _ in range(4):
            obs, *_, info = env.step(env.action_names.index("forward"))
            frames.append(obs)
        assert np.linalg.norm(info["agent_pos"] - start) > 20.0
        assert np.abs(np.diff(np.stack(frames).astype(np.int16), axis=0)).mean() > 1.0
        assert isinstance(reward, float) and "health" in info
        assert "health" in env.extra_keys  # recorded per frame, for worlds that carry it
        # Standing still on the acid floor kills; the game's final health, not the last frame's, ends the episode.
        env.reset(seed=3)
        terminated = False
        for _ in range(600):
            _, _, terminated, truncated, info = env.step(env.action_names.index("noop"))
            if terminated or truncated:
                break
        assert terminated and info["health"] <= 0
        runs = []
        for _ in range(2):
            env.reset(seed=3)
            runs.append(np.stack([env.step(a)[0] for a in (1, 1, 4, 4, 1, 5, 5, 1)]))
        np.testing.assert_array_equal(runs[0], runs[1])
    finally:
        env.close()


@pytest.mark.worlds
def test_doom_hud_shows_the_health_in_a_bottom_corner() -> None:
    frames = {}
    for hud in (False, True):
        env = make_real_world("doom", seed=2, hud=hud)
        try:
            env.reset(seed=2)
            frames[hud] = env.step(1)[0].astype(np.int16)
        finally:
            env.close()
    corner = (slice(52, 64), slice(16, 40))  # where the minimal HUD draws the health digits
    red = frames[True][corner][..., 0] - frames[True][corner][..., 1:].max(axis=-1)
    assert (red > 80).sum() > 10  # the digits are bright red
    np.testing.assert_array_equal(frames[True][:40], frames[False][:40])  # the view itself is the same


@pytest.mark.worlds
def test_doom_games_keep_their_files_out_of_the_working_folder(tmp_path, monkeypatch) -> None:
    # The game process writes _vizdoom.ini and _vizdoom/ where it starts: two worlds started side
    # by side in one folder raced to create them (a collector worker failed with "File exists").
    monkeypatch.chdir(tmp_path)
    worlds = [make_real_world("doom", seed=s) for s in (0, 1)]
    try:
        game_dirs = [env._game_dir for env in worlds]
        assert len(set(game_dirs)) == 2
        for env in worlds:
            env.reset(seed=0)
            env.step(1)
        assert list(tmp_path.iterdir()) == []
    finally:
        for env in worlds:
            env.close()
    assert not any(Path(d).exists() for d in game_dirs)


@pytest.mark.filterwarnings("ignore:.*not having a spec")
@pytest.mark.parametrize("spec", [pytest.param("doom", marks=pytest.mark.worlds), "gym:CartPole-v1"])
def test_worlds_pass_gymnasiums_env_checker(spec: str) -> None:
    env = make_real_world(spec, render_mode="rgb_array")
    try:
        check_env(env)  # spaces, seeding determinism, render: raises on any violation
    finally:
        env.close()


@pytest.mark.worlds
def test_crafter_world_is_reproducible_by_seed() -> None:
    env = make_real_world("crafter", render_mode="rgb_array")
    obs, info = env.reset(seed=7)
    check_surface(env, obs, info)
    assert env.action_space.n == 17 and env.action_names[:3] == ["noop", "move_left", "move_right"]
    assert info["agent_pos"].shape == (2,)
    actions = [env.action_names.index("move_left")] * 3 + [env.action_names.index("do")] * 2
    run_a = [env.step(a)[0] for a in actions]
    env.reset(seed=7)
    run_b = [env.step(a)[0] for a in actions]
    np.testing.assert_array_equal(np.stack(run_a), np.stack(run_b))
    other, _ = env.reset(seed=8)
    assert not np.array_equal(other, obs)  # another seed, another world


@pytest.mark.worlds
def test_maze_world_pose_and_turns() -> None:
    env = make_real_world("maze", seed=1, render_mode="rgb_array")
    try:
        obs, info = env.reset()
        check_surface(env, obs, info)
        assert env.action_names == ["noop", "forward", "left", "right", "forward+left", "forward+right"]
        assert info["agent_pos"].shape == (2,) and info["agent_dir"].shape == (2,)
        before = heading_deg(info)
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(env.action_names.index("left"))
        assert 10.0 < (heading_deg(info) - before) % 360 < 90.0  # left turns counter-clockwise
        assert not terminated and not truncated
        assert obs.mean() > 10.0
    finally:
        env.close()


class FakeContacts:
    """Contacts as MuJoCo's list offers them: iterable one by one, and as geom1/geom2 arrays."""

    def __init__(self, pairs: list[tuple[int, int]]) -> None:
        self.pairs = pairs
        self.geom1 = np.array([a for a, _ in pairs], np.int32)
        self.geom2 = np.array([b for _, b in pairs], np.int32)

    def __iter__(self):
        return iter(SimpleNamespace(geom1=a, geom2=b) for a, b in self.pairs)


@pytest.mark.worlds
@pytest.mark.parametrize("specific", [None, [7], [9]])
@pytest.mark.parametrize("pairs", [[], [(0, 5)], [(5, 7)], [(1, 2), (7, 5)], [(1, 2), (3, 4)]])
def test_vectorized_target_touch_matches_dm_control(pairs: list, specific: list | None) -> None:
    from far_world.envs.real.maze_contacts import ITERATING_UPDATE_ACTIVATION, update_activation_vectorized

    outcomes = []
    for update in (ITERATING_UPDATE_ACTIVATION, update_activation_vectorized):
        rgba = np.ones(4)
        physics = SimpleNamespace(data=SimpleNamespace(contact=FakeContacts(pairs)),
                                  bind=lambda material, rgba=rgba: SimpleNamespace(rgba=rgba))
        sphere = SimpleNamespace(_activated=False, _geom_id=5, _specific_collision_geom_ids=specific, _material=None)
        update(sphere, physics)
        outcomes.append((sphere._activated, rgba[-1]))
    assert outcomes[0] == outcomes[1]
    touched = any(5 in p and (specific is None or any(g in specific for g in p)) for p in pairs)
    assert outcomes[1][0] == touched


class ImageMultiDiscreteEnv(gymnasium.Env):
    """A minimal env with image observations and MultiDiscrete([2, 3]) actions."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = gymnasium.spaces.Box(0, 255, (32, 48, 3), np.uint8)
        self.action_space = gymnasium.spaces.MultiDiscrete([2, 3])
        self.last_action = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full((32, 48, 3), 10, np.uint8), {}

    def step(self, action):
        self.last_action = np.asarray(action).tolist()
        return np.full((32, 48, 3), 40 * (1 + int(action[1])), np.uint8), 1.0, False, False, {}


class VectorObservationEnv(ImageMultiDiscreteEnv):
    """No image observation and no rgb_array rendering: nothing to build frames from."""

    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)


def test_gym_world_renders_cartpole() -> None:
    env = make_real_world("gym:CartPole-v1", seed=0, render_mode="rgb_array")
    obs, info = env.reset()
    check_surface(env, obs, info)
    assert env.world_name == "gym:CartPole-v1" and env.action_names == ["action_0", "action_1"]
    assert obs.mean() > 100  # a white background, not a black frame
    obs2, reward, *_ = env.step(1)
    assert reward == 1.0 and obs2.shape == (64, 64, 3)
    env.close()


def test_gym_world_flattens_multidiscrete_and_uses_image_observations() -> None:
    gymnasium.register("FarWorldTestImage-v0", entry_point=ImageMultiDiscreteEnv)
    try:
        env = make_real_world("gym:FarWorldTestImage-v0", frame_skip=2)
        obs, _ = env.reset()
        assert env.action_space.n == 6 and env.action_names[5] == "a0=1,a1=2"
        obs, reward, *_ = env.step(5)
        assert env._env.unwrapped.last_action == [1, 2]
        assert reward == 2.0  # frame_skip=2 sums two rewards
        assert obs.shape == (64, 64, 3) and int(obs[0, 0, 0]) == 120
    finally:
        gymnasium.registry.pop("FarWorldTestImage-v0")


@pytest.mark.filterwarnings("ignore:.*render_mode='rgb_array' that is not in the possible render_modes")
def test_gym_world_without_frames_or_with_continuous_actions_is_refused() -> None:
    gymnasium.register("FarWorldTestVector-v0", entry_point=VectorObservationEnv)
    try:
        with pytest.raises(ValueError, match="no RGB frames"):
            make_real_world("gym:FarWorldTestVector-v0")
    finally:
        gymnasium.registry.pop("FarWorldTestVector-v0")
    with pytest.raises(ValueError, match="Discrete or MultiDiscrete"):
        make_real_world("gym:Pendulum-v1")
