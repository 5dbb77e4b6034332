"""far-world: a FAR (Frame AutoRegressive) world model you can play and train agents in.

Importing the package registers the Gymnasium environment ``FARWorld-v0`` (single and native
vector entry points); ``far_world.WorldModel`` is the batched, KV-cached model behind it.
"""

from __future__ import annotations

import os

import gymnasium

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise): on a small
# shared CPU, spinning threads made small-batch steps many times slower. It must be set before
# torch loads, which is why it lives here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["WorldModel", "__version__"]

if "FARWorld-v0" not in gymnasium.registry:
    gymnasium.register(
        id="FARWorld-v0",
        entry_point="envs.far_world_env:FARWorldEnv",
        vector_entry_point="envs.far_world_vector:FARWorldVectorEnv",
    )


def __getattr__(name: str):
    # torch loads only when the model is used, so `import far_world` stays cheap.
    if name == "WorldModel":
        from far_world.world import WorldModel

        return WorldModel
    raise AttributeError(f"module 'far_world' has no attribute {name!r}")
