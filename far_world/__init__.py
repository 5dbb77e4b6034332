"""far-world: a FAR (Frame AutoRegressive) world model you can play and train agents in.

Importing the package registers the Gymnasium environment ``FARWorld-v0`` (single and native
vector entry points); ``far_world.WorldModel`` is the batched, KV-cached model behind it.
"""

from __future__ import annotations

from far_world.openmp import configure_openmp

configure_openmp()  # first: the OpenMP settings must precede torch's import

import gymnasium  # noqa: E402

__version__ = "0.1.0"
__all__ = ["WorldModel", "__version__"]

if "FARWorld-v0" not in gymnasium.registry:
    gymnasium.register(
        id="FARWorld-v0",
        entry_point="far_world.envs.far_world_env:FARWorldEnv",
        vector_entry_point="far_world.envs.far_world_vector:FARWorldVectorEnv",
        # One episode limit, Gymnasium's: `make(..., max_episode_steps=N)` sets it (TimeLimit),
        # and `make_vec` hands it to the vector env.
        max_episode_steps=1000,
    )


def __getattr__(name: str):
    # torch loads only when the model is used, so `import far_world` stays cheap.
    if name == "WorldModel":
        from far_world.world import WorldModel

        return WorldModel
    raise AttributeError(f"module 'far_world' has no attribute {name!r}")
