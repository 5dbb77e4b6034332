"""Trajectory collection from the real worlds: exploration policies, worker processes, resume and split."""

from far_world.collection.collector import CollectConfig, CollectReport, collect
from far_world.collection.dataset_meta import DatasetMismatchError
from far_world.collection.policies import POLICIES, default_policy, make_policy
from far_world.collection.worker_pool import WorkerDiedError

__all__ = [
    "POLICIES",
    "CollectConfig",
    "CollectReport",
    "DatasetMismatchError",
    "WorkerDiedError",
    "collect",
    "default_policy",
    "make_policy",
]
