"""What the Minecraft env and its game process agree on: the action set and the pipe messages.

Standard library only: the game process imports this file by path from its own interpreter
(Python 3.11 with numpy<2), where neither far_world nor the project's numpy is importable.

Commands (env -> game, on the game's stdin): one byte of kind, then a little-endian int64
argument (the seed for ``reset``, the action index for ``step``).
Replies (game -> env, on the game's stdout): one byte of kind, a little-endian uint32 payload
length, then the payload:
  READY  JSON (the game's settings), once the game has started and waits for a seed
  FRAME  pose as 5 float64 (x, y, z, yaw, pitch), then the frame, H*W*3 uint8 RGB, top row first
  ERROR  UTF-8 text (a traceback): the game failed and will exit
"""

from __future__ import annotations

import struct

# MineRL's keyboard and camera actions, one at a time, plus forward+jump (the only way up a
# block). The names are play.py's key vocabulary: left/right strafe (A/D), as in MineRL and
# VPT; camera_* are the arrow keys; attack breaks a block, use places one.
ACTIONS: tuple[str, ...] = (
    "noop",
    "forward",
    "back",
    "left",
    "right",
    "jump",
    "forward+jump",
    "camera_left",
    "camera_right",
    "camera_up",
    "camera_down",
    "attack",
    "use",
)

# Game ticks (20 Hz) a step: one tick moves the view by less than a pixel at 64x64 when walking.
FRAME_SKIP = 2
# Camera step in degrees: a 15-degree turn shifts a 70-degree view by about a fifth, enough to
# see, small enough that most of the next frame is still in this one.
CAMERA_STEP_DEG = 15.0
# Levels are this many blocks along x and z (the game's size 0). Outside them the game draws an
# endless flat plain, and the player can walk out onto it: explorers steer back.
LEVEL_SIZE = 128
# Random walks that keep looking up end up staring at the sky: pitch stays within this.
PITCH_LIMIT_DEG = 45.0

CMD_RESET, CMD_STEP, CMD_CLOSE = b"R", b"S", b"Q"
REPLY_READY, REPLY_FRAME, REPLY_ERROR = b"r", b"f", b"e"

COMMAND = struct.Struct("<cq")
REPLY_HEADER = struct.Struct("<cI")
POSE = struct.Struct("<5d")


def encode_command(kind: bytes, argument: int = 0) -> bytes:
    return COMMAND.pack(kind, argument)


def encode_reply(kind: bytes, payload: bytes = b"") -> bytes:
    return REPLY_HEADER.pack(kind, len(payload)) + payload


def encode_frame(pose: tuple[float, float, float, float, float], pixels: bytes) -> bytes:
    return encode_reply(REPLY_FRAME, POSE.pack(*pose) + pixels)


def decode_frame(payload: bytes) -> tuple[tuple[float, ...], memoryview]:
    """(pose (x, y, z, yaw, pitch), frame bytes) of a FRAME payload."""
    return POSE.unpack_from(payload), memoryview(payload)[POSE.size:]
