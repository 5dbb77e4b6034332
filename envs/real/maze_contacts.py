"""A vectorized target-touch check for dm_control's TargetSphere: the maze's main cost, made cheap.

Every physics substep (50 a maze step), each of the maze's target spheres asks whether the
agent touches it by iterating over ``physics.data.contact``. Iterating builds one Python
object per contact, about 250 us a call even for a single contact: two thirds of a maze step.
The same rule on the contact arrays (``geom1``, ``geom2``) takes a few microseconds: a maze
step became about four times faster (17 -> 75 steps/s, one process, measured back to back on
a busy 2-core machine).
"""

from __future__ import annotations

import os
from typing import Any

# dm_control picks its GL backend when first imported: headless EGL unless the user chose one.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from dm_control.locomotion.props import target_sphere  # noqa: E402

ITERATING_UPDATE_ACTIVATION = target_sphere.TargetSphere._update_activation


def update_activation_vectorized(self: target_sphere.TargetSphere, physics: Any) -> None:
    """TargetSphere._update_activation on arrays: activated once any contact involves the sphere's
    geom (and, when the sphere has ``specific_collision_geom_ids``, one of those in the same contact)."""
    if self._activated:
        return
    contacts = physics.data.contact
    geom1, geom2 = np.asarray(contacts.geom1), np.asarray(contacts.geom2)
    touching = (geom1 == self._geom_id) | (geom2 == self._geom_id)
    if self._specific_collision_geom_ids:
        specific = list(self._specific_collision_geom_ids)
        touching &= np.isin(geom1, specific) | np.isin(geom2, specific)
    if touching.any():
        self._activated = True
        physics.bind(self._material).rgba[-1] = 0


def install() -> None:
    """Use the vectorized check for every TargetSphere in this process (the rule is unchanged)."""
    target_sphere.TargetSphere._update_activation = update_activation_vectorized
