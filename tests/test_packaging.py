"""The package installs under its own name only, and its released worlds ship inside it.

`envs/` installs as `far_world.envs` and `checkpoints/` as `far_world.checkpoints`, so that a
user's own `envs` package never collides with ours; the wheel check in .ci/run builds a real
wheel and imports it from a folder with its own `envs/__init__.py`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from far_world.released import (
    CHECKPOINT_ENV_VAR,
    default_checkpoint_path,
    released_checkpoints,
    released_name,
    resolve_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
# Where each installed package's sources live in the repository.
SOURCE_ROOTS = {"far_world": REPO / "far_world", "far_world.envs": REPO / "envs", "far_world.checkpoints": REPO / "checkpoints"}
# Skip folders that are not the project's sources.
NOT_SOURCES = {".git", "data", "runs", "build", "dist", "cache", "outputs"}


def package_folders() -> set[str]:
    """Every folder with an __init__.py under the source roots, as its installed dotted name."""
    found = set()
    for name, root in SOURCE_ROOTS.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            if "__pycache__" not in rel:
                found.add(".".join((name, *rel)))
    return found


def test_pyproject_lists_every_package_under_far_world_only():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()
    assert all(p == "far_world" or p.startswith("far_world.") for p in config["packages"])
    assert config["package-dir"] == {"far_world.envs": "envs", "far_world.checkpoints": "checkpoints"}
    assert config["package-data"]["far_world.checkpoints"] == ["*.pt"]


def test_no_source_imports_a_top_level_envs_package():
    pattern = re.compile(r"^\s*(from|import)\s+envs\b|import_module\(f?[\"']envs\.|[\"']envs\.[\w.]+:", re.M)
    offenders = []
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if parts[0] in NOT_SOURCES or parts[0].startswith(".venv"):
            continue
        if pattern.search(path.read_text(errors="replace")):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"import far_world.envs, not envs: {offenders}"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_imports_from_a_folder_with_its_own_envs_package(tmp_path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("MINE = True\n")
    code = (
        "import envs, far_world.envs.real, far_world.envs.far_world_env as fe\n"
        "assert envs.MINE\n"
        "assert not hasattr(envs, 'far_world_env') and not hasattr(envs, 'real')\n"
        "print(fe.__name__)\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "far_world.envs.far_world_env"


def test_nothing_named_envs_is_installed(tmp_path):
    result = run_python("import envs", tmp_path)
    assert result.returncode != 0 and "No module named 'envs'" in result.stderr


def test_released_checkpoints_ship_as_package_data():
    bundled = released_checkpoints()
    tracked = sorted(p.name for p in (REPO / "checkpoints").glob("*.pt"))
    assert sorted(bundled) == tracked and "maze.pt" in bundled
    for name, path in bundled.items():
        assert path.is_file() and path.name == name


def test_default_checkpoint_is_the_bundled_maze(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKPOINT_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_checkpoint_path() == released_checkpoints()["maze.pt"]
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"")
    monkeypatch.setenv(CHECKPOINT_ENV_VAR, str(mine))
    assert default_checkpoint_path() == mine


def test_a_released_name_finds_the_bundled_file_from_any_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    bundled = released_checkpoints()
    name = "doom_health_gathering.pt" if "doom_health_gathering.pt" in bundled else "maze.pt"
    stem = name.removesuffix(".pt")
    for spelling in (f"checkpoints/{name}", name, stem):
        assert resolve_checkpoint(spelling) == bundled[name], spelling
    assert resolve_checkpoint(None) == default_checkpoint_path()


def test_an_existing_file_wins_and_other_paths_stay_as_given(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    local = tmp_path / "checkpoints" / "maze.pt"
    local.write_bytes(b"a local file of the same name")
    assert resolve_checkpoint("checkpoints/maze.pt") == Path("checkpoints/maze.pt")
    for path in ("runs/x/maze.pt", str(tmp_path / "elsewhere" / "maze.pt"), "no_such_world"):
        assert resolve_checkpoint(path) == Path(path)
    assert released_name("runs/maze.pt") is None and released_name("checkpoints/maze") == "maze.pt"


@pytest.mark.skipif("maze.pt" not in released_checkpoints(), reason="no released default checkpoint")
def test_make_by_released_name_outside_the_repository(monkeypatch, tmp_path):
    import gymnasium

    import far_world  # noqa: F401  (registers FARWorld-v0)

    monkeypatch.chdir(tmp_path)
    env = gymnasium.make("FARWorld-v0", ckpt="checkpoints/maze.pt")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
