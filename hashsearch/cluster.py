"""Where distributed work runs: a Ray cluster named by an address (or $RAY_ADDRESS), or else a small
local Ray instance started on demand (no dashboard, logs in a temporary folder).

Ray is an optional dependency (`pip install "hashsearch[cluster]"`); it is imported only here and by
the modules that need a cluster, so `import hashsearch` stays light.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import Any

from hashsearch.errors import HashsearchError

LOCAL_OBJECT_STORE_BYTES = 1 << 30  # a local instance's shared-memory store; Ray spills to disk past it
# Ray starts its workers at niceness 15, below everything else on the node; shard actors do the
# search itself, and on a shared machine each of their calls would wait behind every other process.
# A cluster's nodes take the same setting from RAY_worker_niceness=0 at `ray start`.
WORKER_NICENESS = 0


def ray_module() -> Any:
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise HashsearchError('this needs Ray: pip install "hashsearch[cluster]"') from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS, e.g. "ray://head:10001" or "head:6379");
    with neither, start a local instance with the machine's cores. Does nothing when Ray is already
    initialised in this process. Returns the `ray` module."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        temp_dir = tempfile.mkdtemp(prefix="hashsearch-ray-")
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.WARNING,
                 log_to_driver=False, _temp_dir=temp_dir, _system_config={"worker_niceness": WORKER_NICENESS})
        atexit.register(_remove_local_instance, ray, temp_dir)
    return ray


def _remove_local_instance(ray: Any, temp_dir: str) -> None:
    """At exit: stop the local instance this process started and delete its session folder (logs)."""
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def cluster_cpus() -> float:
    """CPUs the connected cluster has in all (connects locally first if needed)."""
    return float(connect().cluster_resources().get("CPU", 1.0))


def cluster_nodes() -> int:
    """Alive nodes of the connected cluster (connects locally first if needed)."""
    return max(1, sum(1 for node in connect().nodes() if node.get("Alive")))
