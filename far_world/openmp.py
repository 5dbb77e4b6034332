"""torch's OpenMP runtime, configured in one place: applied by ``import far_world``.

Two traps on small CPUs and in forked workers:
- Idle OpenMP threads spin at barriers by default. On a shared 2-core CPU a spinning thread
  whose peer was descheduled made small-batch steps several times slower, so idle threads
  sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose otherwise. The variable is read
  when torch loads its OpenMP runtime: import far_world before torch.
- GNU OpenMP (torch's CPU backend) cannot run a parallel region in a forked child once the
  parent has run one: the child waits forever for pool threads that fork did not copy.
  Gymnasium's ``AsyncVectorEnv`` forks after building a model in the parent, so a forked
  child runs torch on one thread (each such worker steps one world; spawned workers are
  unaffected).

A third, for inference: a forward pass over a few dozen tokens is a chain of tiny operations,
and waking a second thread for each costs more than it saves. :func:`torch_threads` runs such
passes on one thread and gives torch its setting back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_configured = False


def _single_threaded_torch_in_forked_child() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def configure_openmp() -> None:
    """Set the wait policy (before torch loads) and the fork guard; idempotent."""
    global _configured
    if _configured:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.register_at_fork(after_in_child=_single_threaded_torch_in_forked_child)
    _configured = True


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch on ``threads`` intra-op threads (None: as it is), then restore."""
    import torch

    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
