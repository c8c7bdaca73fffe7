"""Multi-process runs: ``jax.distributed`` start-up (each process then takes its own sub-shard)."""

from __future__ import annotations

import jax


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> tuple[int, int]:
    """``jax.distributed.initialize`` (arguments None = auto-detected on Cloud TPU, Slurm, Kubernetes).

    Returns ``(process_index, process_count)``.
    """
    kw = {}
    if coordinator_address:
        kw["coordinator_address"] = coordinator_address
    if num_processes is not None:
        kw["num_processes"] = int(num_processes)
    if process_id is not None:
        kw["process_id"] = int(process_id)
    jax.distributed.initialize(**kw)
    return jax.process_index(), jax.process_count()
