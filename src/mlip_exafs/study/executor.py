"""Run a DAG of steps here, several at once, or spread over Dask workers.

Both executors call the same ``run_step``, and each step runs in its own child
process, so the local executor only has to wait on children: a few threads here
each start one step and wait for it, as many as the cores allow at the study's
torch threads per step. Dask receives the dependency results as futures and
does the same across workers.
"""

from __future__ import annotations

import logging
import os
import signal
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from mlip_exafs.errors import UserError, first_line
from mlip_exafs.potentials.runtime import THREADS_ENV, available_cores, threads_from_environment
from mlip_exafs.study.steps import CHILD_MODULE, Step, all_hashes, cached_result, run_step

OnStep = Callable[[str, bool], None]


def run_local(steps: list[Step], root: Path, on_step: OnStep | None = None, workers: int | None = None) -> dict[str, dict]:
    """Run every step whose dependencies are done, up to ``workers`` at once (default: cores / threads per step).

    Of the ready steps, those with the longest chain of steps waiting on them start
    first (a fine-tune whose model still gets MD, EXAFS and a comparison before a
    pristine validation), ties in the given order. Each step's
    child gets ``MLIP_EXAFS_THREADS`` torch threads (default 1), so workers x
    threads never exceed the cores. When a step fails, no new step starts, the
    running ones are terminated (a killed step resumes on the rerun, like after
    a kill of the whole study: MD from its checkpoint) and the first error is raised.
    """
    threads = threads_per_step()
    workers = workers or max(1, available_cores() // threads)
    hashes = all_hashes(steps)
    cached_at_start = cached_names(steps, root, hashes)
    results: dict[str, dict] = {}
    chain = chain_lengths(steps)
    waiting = sorted(steps, key=lambda s: -chain[s.name])  # stable: ties keep the given order
    running: dict[Future, str] = {}
    # A step's child dies with the thread that started it (PR_SET_PDEATHSIG is per thread): the pool's
    # threads live until the pool closes, after every child has ended.
    with _step_threads(threads), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step") as pool:
        try:
            while waiting or running:
                for step in [s for s in waiting if all(d in results for d in s.deps)][: workers - len(running)]:
                    waiting.remove(step)
                    running[pool.submit(run_step, root, step, hashes[step.name], {d: results[d] for d in step.deps})] = step.name
                if not running:
                    raise ValueError(f"steps {', '.join(s.name for s in waiting)} depend on steps that are not in the study")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    results[name] = future.result()  # re-raises the step's error
                    if on_step:
                        on_step(name, name in cached_at_start)
        except BaseException:
            _stop(running)
            raise
    return results


def chain_lengths(steps: list[Step]) -> dict[str, int]:
    """For each step, the longest chain of steps that wait on it (0: nothing depends on it).

    Starting the longest chains first keeps the critical path busy: in the WS2 quick
    profile the N = 10 fine-tune, then its validation, MD and EXAFS.
    """
    dependents: dict[str, list[str]] = {s.name: [] for s in steps}
    for step in steps:
        for dep in step.deps:
            dependents.setdefault(dep, []).append(step.name)
    lengths: dict[str, int] = {}

    def length(name: str) -> int:
        if name not in lengths:
            lengths[name] = max((1 + length(d) for d in dependents[name]), default=0)
        return lengths[name]

    return {s.name: length(s.name) for s in steps}


def threads_per_step() -> int:
    """Torch threads of each step's child: the study's ``threads`` (exported as ``MLIP_EXAFS_THREADS``), else 1.

    A second step on a second core does twice the work; a second torch thread for
    the same step made a 432-atom CHGNet MD at most 1.5x faster, and threads that
    outnumber the cores spin (docs/study.md).
    """
    return threads_from_environment() or 1


@contextmanager
def _step_threads(threads: int) -> Iterator[None]:
    """Give the step children ``threads`` torch threads (they inherit this process's environment), then restore it."""
    saved = {name: os.environ.get(name) for name in (THREADS_ENV, "OMP_WAIT_POLICY")}
    os.environ[THREADS_ENV] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as on the Dask workers: idle OpenMP threads sleep, not spin
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop(running: dict[Future, str]) -> None:
    """SIGTERM the running steps' children until every step's thread has returned.

    Only children started as ``python -m CHILD_MODULE`` are touched. Their
    writes are atomic, so a terminated step leaves what a killed study leaves: a
    folder without ``step.json`` that the next run resumes. Repeated, because a
    thread may be about to start its child when the first signal goes out.
    """
    while not all(future.done() for future in running):
        stop_step_children()
        wait(running, timeout=0.5)


def step_process_ids(parent: int | None = None, root: str | Path | None = None) -> list[int]:
    """Pids of the step children of ``parent`` (default: this process), read from ``/proc``; none elsewhere.

    ``root``: only those running a step folder under it (a shared Dask worker also runs other studies' steps).
    """
    parent = parent or os.getpid()
    inside = (str(Path(root)).rstrip("/") + "/").encode() if root is not None else None
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not readable
            continue
        if ppid == parent and CHILD_MODULE.encode() in argv and (inside is None or any(arg.startswith(inside) for arg in argv)):
            pids.append(int(entry.name))
    return pids


def stop_step_children(root: str | None = None) -> list[int]:
    """SIGTERM this process's step children (those working under ``root``); on every Dask worker when a study stops.

    A worker runs a step in a thread that waits on the step's child, and Dask cannot stop a running task:
    without this, an interrupted study's MD ran on to its end on the worker, and the rerun waited for it
    (or, from another executor, found its folder locked by a pid on another machine).
    """
    pids = step_process_ids(root=root)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:  # it finished meanwhile
            pass
    return pids


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
    """``workers`` single-threaded worker processes; each step's child gets cores / workers torch threads.

    The workers start with SIGINT ignored: a Ctrl-C reaches the whole process group, and each worker printed a
    KeyboardInterrupt traceback before the study's one line. The study stops them (and their steps) itself.
    """
    import dask  # lazy: dask, seconds to import; only a Dask run needs it
    from dask.distributed import LocalCluster  # lazy: dask, seconds to import; only a Dask run needs it

    workers = max(1, min(workers, available_cores()))  # torch threads x processes must not exceed the cores (taskset, cgroups)
    threads = threads_from_environment() or max(1, available_cores() // workers)
    env = {"OMP_WAIT_POLICY": "PASSIVE", THREADS_ENV: str(threads)}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with dask.config.set(QUIET_LOCAL_CLUSTER):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)


def quiet_cancellation_warnings() -> None:
    """On a local cluster's worker: a study stopped by Ctrl-C releases its running tasks, and each worker logged a
    warning per task ('Async instruction ... ended with CancelledError') before the study's one line."""
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


def connect(scheduler: str | None, workers: int):
    """(client, local cluster or None); an unreachable or malformed scheduler address is one line, not a traceback."""
    from dask.distributed import Client  # lazy: dask, seconds to import; only a Dask run needs it

    if scheduler is None:
        cluster = local_cluster(workers)
        client = Client(cluster)
        client.run(quiet_cancellation_warnings)
        return client, cluster
    try:
        return Client(scheduler, timeout="30s"), None
    except (OSError, ValueError, TimeoutError) as exc:
        raise UserError(f"cannot reach the Dask scheduler {scheduler} ({first_line(exc)}); check the address (tcp://HOST:PORT) and that the scheduler "
                        "still runs") from None


def run_dask(steps: list[Step], root: Path, scheduler: str | None = None, workers: int | None = None, on_step=None,
             environment: dict[str, str] | None = None) -> dict[str, dict]:
    """Submit every step at once; Dask orders them by their dependencies, and ready ones as ``run_local`` does.

    Each step's Dask priority is its chain length (:func:`chain_lengths`): without it Dask ran ready steps in
    submission order, so the WS2 paper study's pristine SevenNet-0 MD (6.2 h) started after all 21 fine-tunes and
    ran alone at the end. Without a scheduler address a LocalCluster of ``workers`` single-threaded
    processes is started (default: cores / threads per step, as ``run_local`` runs steps at once; it was
    always 2, so a 64-core workstation ran 2 steps of 32 torch threads each). ``environment``: the study's
    runtime settings (torch threads, device) for every step's child, wherever its worker runs. When the study
    stops (an error, Ctrl-C, SIGTERM), its steps' children on every worker are stopped too.
    """
    from dask.distributed import as_completed  # lazy: dask, seconds to import; only a Dask run needs it

    hashes = all_hashes(steps)
    client, cluster = connect(scheduler, workers or max(1, available_cores() // threads_per_step()))
    cached_at_start = cached_names(steps, root, hashes)
    chain = chain_lengths(steps)
    futures = {}
    try:
        for step in steps:
            deps = {d: futures[d] for d in step.deps}
            futures[step.name] = client.submit(run_step, root, step, hashes[step.name], deps, environment, key=f"{step.name}-{hashes[step.name]}",
                                               pure=False, priority=chain[step.name])
        names = {f.key: n for n, f in futures.items()}
        for future in as_completed(list(futures.values())):
            _result_of(future, names[future.key])  # re-raises a step's error here
            if on_step:
                on_step(names[future.key], names[future.key] in cached_at_start)
        return {name: f.result() for name, f in futures.items()}
    except BaseException:
        _stop_on_workers(client, list(futures.values()) if cluster is None else [], root)  # a local cluster closes below anyway
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _result_of(future, name: str):
    """A step's result; a worker lost to SLURM (walltime, preemption, memory) or a scheduler gone is one line."""
    from distributed.scheduler import KilledWorker  # lazy: dask, seconds to import; only a Dask run needs it

    try:
        return future.result()
    except KilledWorker:
        raise UserError(f"step {name}: its Dask worker died repeatedly (a job's walltime, preemption or memory limit?); "
                        "give the jobs more time or memory, then rerun the study to resume") from None
    except (CancelledError, OSError) as exc:
        raise UserError(f"step {name}: the Dask scheduler or its worker went away ({type(exc).__name__}); rerun the study to resume") from None


def _stop_on_workers(client, futures: list, root: Path) -> None:
    """Cancel ``futures`` (no new step starts) and SIGTERM the study's step children on every worker (best effort:
    the cluster may be gone). Cancelling running tasks makes each worker log a warning: only a remote cluster needs it."""
    try:
        if futures:
            client.cancel(futures, force=True)
        client.run(stop_step_children, str(root))
    except Exception:  # the scheduler or the workers are gone: so are their children (they die with their worker)
        pass
