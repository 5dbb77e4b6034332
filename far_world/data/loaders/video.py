"""Decoding and resizing frames for the loaders (OpenCV, so no ffmpeg binary is needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from far_world.data.loaders.base import LoaderError


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one RGB uint8 frame (H,W,3) to ``size`` = (H', W') with area averaging.

    INTER_AREA averages the source pixels under each target pixel, which avoids the aliasing
    (shimmering textures) that bilinear sampling gives when shrinking 128 or 360 lines to 64.
    """
    if frame.shape[:2] == tuple(size):
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize a stack of RGB uint8 frames (N,H,W,3) to (N,H',W',3); ``None`` keeps them as they are."""
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    return np.stack([resize_frame(f, size) for f in frames])


def read_video(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Every frame of a video file as RGB uint8 (N,H,W,3), resized on the fly to ``size`` = (H, W).

    Resizing while decoding keeps memory at the target resolution (a VPT recording is
    640x360 at 20 fps: minutes of it at full size would not fit comfortably in RAM).
    """
    if not path.is_file():
        raise LoaderError(f"{path}: no such video")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise LoaderError(f"{path}: cannot open video")
    frames = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames.append(resize_frame(rgb, size) if size is not None else rgb)
    finally:
        capture.release()
    if not frames:
        raise LoaderError(f"{path}: no frames could be decoded")
    return np.stack(frames)
