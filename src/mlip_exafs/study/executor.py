"""Run a DAG of steps here, one after another, or spread over Dask workers.

Both executors call the same ``run_step``; Dask receives the dependency
results as futures, so independent steps (fine-tunes per N and seed, MD per
potential, EXAFS per potential) run at the same time on different workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mlip_exafs.study.steps import Step, all_hashes, cached_result, run_step


def run_local(steps: list[Step], root: Path, on_step: Callable[[str, bool], None] | None = None) -> dict[str, dict]:
    """Run steps in the given (dependency) order in this process."""
    hashes = all_hashes(steps)
    cached_at_start = cached_names(steps, root, hashes)
    results: dict[str, dict] = {}
    for step in steps:
        results[step.name] = run_step(root, step, hashes[step.name], {d: results[d] for d in step.deps})
        if on_step:
            on_step(step.name, step.name in cached_at_start)
    return results


def cached_names(steps: list[Step], root: Path, hashes: dict[str, str]) -> set[str]:
    """The steps already done before this run: both executors report them as 'cached', the others as 'done'."""
    return {s.name for s in steps if cached_result(root, s, hashes[s.name]) is not None}


# A worker here only waits on its step's child process, so Dask's own sampling of
# itself is pure overhead: with the defaults (event-loop tick every 20 ms in the
# scheduler, nannies and workers, thread profiler every 10 ms, system and memory
# monitors every 0.5 s / 0.1 s) the local cluster took 14 % of a core from the two
# MD processes it was waiting on; with these, 1.8 % (measured, docs/study.md).
QUIET_LOCAL_CLUSTER = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.memory.monitor-interval": "5s",
}


def local_cluster(workers: int):
    """``workers`` single-threaded worker processes; each step's child gets cores / workers torch threads."""
    import dask
    from dask.distributed import LocalCluster

    threads = int(os.environ.get("MLIP_EXAFS_THREADS", 0)) or max(1, (os.cpu_count() or 1) // workers)
    env = {"OMP_WAIT_POLICY": "PASSIVE", "MLIP_EXAFS_THREADS": str(threads)}
    with dask.config.set(QUIET_LOCAL_CLUSTER):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env)


def run_dask(steps: list[Step], root: Path, scheduler: str | None = None, workers: int = 2, on_step=None) -> dict[str, dict]:
    """Submit every step at once; Dask orders them by their dependencies.

    Without a scheduler address a LocalCluster of ``workers`` single-threaded
    processes is started (torch threads x workers must not exceed the cores).
    """
    from dask.distributed import Client, as_completed

    hashes = all_hashes(steps)
    cluster = None if scheduler else local_cluster(workers)
    client = Client(scheduler or cluster)
    cached_at_start = cached_names(steps, root, hashes)
    try:
        futures = {}
        for step in steps:
            deps = {d: futures[d] for d in step.deps}
            futures[step.name] = client.submit(run_step, root, step, hashes[step.name], deps, key=f"{step.name}-{hashes[step.name]}", pure=False)
        names = {f.key: n for n, f in futures.items()}
        for future in as_completed(list(futures.values())):
            future.result()  # re-raises a step's error here
            if on_step:
                on_step(names[future.key], names[future.key] in cached_at_start)
        return {name: f.result() for name, f in futures.items()}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
