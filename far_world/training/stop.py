"""Stopping a training run without losing work: Ctrl-C or SIGTERM saves the state at the next step.

Checkpoints come every ``ckpt_every`` steps; a run killed between them would redo up to that
many steps. Inside ``graceful_stop()`` the first SIGINT or SIGTERM only raises a flag, which
the training loop reads after each step: it saves ``state.pt`` and leaves, and the same
command continues the run. A second signal interrupts at once, as usual.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by the first SIGINT/SIGTERM; ``bool(request)`` says whether a stop was asked for."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[StopRequest]:
    """Handle SIGINT/SIGTERM as a stop request within the block (the main thread only).

    ``enabled=False`` (as for data-parallel runs, whose ranks must stop at the same step) leaves
    the signals alone and yields a request that is never set.
    """
    request = StopRequest()
    if not enabled:
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def ask_to_stop(signum: int, frame: FrameType | None) -> None:
        request.signal_name = signal.Signals(signum).name
        for sig, handler in previous.items():  # a second signal acts as it did before
            signal.signal(sig, handler)
        print(f"\n{request.signal_name}: saving the state after this step (send it again to stop at once)", flush=True)

    for sig in _SIGNALS:
        signal.signal(sig, ask_to_stop)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
