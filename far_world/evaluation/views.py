"""What the player was looking at when free play began: an open view, or a wall filling the frame.

A first-person world fails in two ways that one mean hides. Facing a wall at close range, a
frame says little about where the player stands, so a turn has to be remembered, not seen; in an
open view, with sky above and floor below, the scene is in the frame and can drift. Splitting
free-play windows by their last context frame, and walls by whether an earlier context frame was
open (train/freeplay_by_view.py), tells them apart.
"""

from __future__ import annotations

import numpy as np

# Mean colour difference (0-255) between the top and the bottom quarter of a frame above which
# it shows sky or ceiling over floor. On the fresh maze windows the values fall into two groups,
# below 19 and above 29 (docs/RESULTS.md, "Where the maze world fails").
OPEN_VIEW_CONTRAST = 24.0


def top_bottom_contrast(frame: np.ndarray) -> float:
    """Mean absolute difference, over channels, of the mean colours of the top and bottom quarter
    of a (H,W,3) frame: near 0 when one surface fills the view."""
    quarter = max(frame.shape[0] // 4, 1)
    top = frame[:quarter].reshape(-1, frame.shape[-1]).astype(np.float64).mean(axis=0)
    bottom = frame[-quarter:].reshape(-1, frame.shape[-1]).astype(np.float64).mean(axis=0)
    return float(np.abs(top - bottom).mean())


def is_open_view(frame: np.ndarray, threshold: float = OPEN_VIEW_CONTRAST) -> bool:
    return top_bottom_contrast(frame) > threshold
