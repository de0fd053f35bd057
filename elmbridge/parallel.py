"""Parallel map over independent jobs on Dask, with a progress bar and bounded memory.

Data generation in this toolkit (NEURON simulations, cochlea conversions) is a set of
independent, seeded jobs whose results a single writer stores as they arrive. This
module runs such job sets on a local process pool, an existing Dask scheduler, or
in-process for debugging, and yields results in completion order. A local cluster that
has lost every worker process stops the map with a one-line error rather than waiting
forever (`WORKERLESS_TIMEOUT_S`).
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from elmbridge.errors import UserError

SYNCHRONOUS = "synchronous"
# Schemes whose addresses are host:port (the others, e.g. inproc://, are opaque to us).
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
# A local cluster whose worker processes are all gone (killed from outside, or by the
# kernel for memory) does not start new ones: its jobs would wait forever. After this
# long without a worker the map stops with an error instead (the jobs already stored
# stay stored; the commands resume). Checked every POLL_S while no job finishes.
WORKERLESS_TIMEOUT_S = 120.0
POLL_S = 5.0


def check_scheduler_address(address: str | None) -> None:
    """Refuse a --scheduler value that cannot be a Dask scheduler's address, before any work.

    Accepts None, "synchronous", and addresses such as "tcp://10.0.0.1:8786" or
    "host:8786"; says what is wrong with anything else in one line.
    """
    if address is None or address == SYNCHRONOUS:
        return
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    hint = (
        "give the address a running scheduler prints, e.g. tcp://10.0.0.1:8786, or "
        f"'{SYNCHRONOUS}' to run in this process"
    )
    try:
        scheme, location = parse_address(address, strict=False)
        if scheme not in backends:
            raise ValueError(f"unknown scheme {scheme}://; known: {', '.join(sorted(backends))}")
        if scheme in _HOST_PORT_SCHEMES:
            _, port = parse_host_port(location)
            if not 0 < int(port) < 65536:
                raise ValueError(f"port {port} is outside 1–65535")
    except (ValueError, TypeError) as err:
        raise UserError(
            f"--scheduler {address!r} is not a scheduler address ({err}); {hint}"
        ) from err


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    n_workers: int | None = None,
    connect_timeout_s: float = 20.0,
    *,
    threads_per_worker: int = 1,
    processes: bool = True,
    resources: dict[str, float] | None = None,
) -> Iterator[Any]:
    """A Dask client for a job set; `None` inside the context means run in-process.

    Args:
        scheduler: None for a new LocalCluster, "synchronous" for in-process execution,
            or the address of a running scheduler (e.g. "tcp://10.0.0.1:8786", as printed
            by `dask scheduler` or a dask-jobqueue cluster).
        n_workers: worker processes of a new LocalCluster (default: one per core). Each
            worker runs one job at a time: the jobs are single-threaded and CPU-bound.
        connect_timeout_s: how long to wait for an existing scheduler, seconds.
        threads_per_worker: jobs a worker of a new LocalCluster runs at a time.
        processes: worker processes (True) or threads of this process (False: for tests).
        resources: what each worker of a new LocalCluster offers (e.g. {"GPU": 1}).
    """
    if scheduler == SYNCHRONOUS:
        yield None
        return
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        check_scheduler_address(scheduler)
        try:
            client = Client(scheduler, timeout=f"{connect_timeout_s}s")
        except (OSError, TimeoutError) as err:
            raise UserError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({err}). Start one "
                "(`dask scheduler`, or a dask-jobqueue cluster) or leave --scheduler out "
                "to use this machine's cores."
            ) from err
        with client:
            yield client
        return
    n_workers = n_workers or os.cpu_count() or 1
    if n_workers < 1:
        raise UserError(f"the number of workers must be at least 1, got {n_workers}")
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            resources=resources,
            # No dashboard; the scheduler's HTTP endpoint on a free port, so that two runs
            # on one machine do not warn about port 8787.
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            # A failing job reaches the caller through its future (and, for bad input, as
            # a one-line UserError); the workers' own "Compute Failed" report with its
            # traceback would only repeat it.
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def map_unordered(
    fn: Callable[[Any], Any],
    jobs: Iterable[Any],
    *,
    client: Any | None,
    desc: str,
    total: int | None = None,
    max_in_flight: int | None = None,
    workerless_timeout_s: float = WORKERLESS_TIMEOUT_S,
    poll_s: float = POLL_S,
) -> Iterator[tuple[Any, Any]]:
    """Apply `fn` to each job and yield `(job, result)` pairs as they finish.

    At most `max_in_flight` jobs (default: twice the number of worker threads) are
    submitted at once, so results never pile up in memory faster than the caller
    stores them. A job that raises stops the whole map with that exception.

    Args:
        fn: a top-level (picklable) function of one argument.
        jobs: the job descriptions, each picklable.
        client: a Dask client, or None to run in this process.
        desc: label of the progress bar.
        total: number of jobs, for the progress bar. When given, `jobs` is consumed
            lazily (only `max_in_flight` job descriptions exist at a time).
        workerless_timeout_s: on a local cluster, stop with a `UserError` after this many
            seconds with no worker process left (checked every `poll_s` seconds while no
            job finishes).
    """
    if total is None:
        jobs = list(jobs)
        total = len(jobs)
    with tqdm(total=total, desc=desc, unit="job") as bar:
        if client is None:
            for job in jobs:
                result = fn(job)
                bar.update()
                yield job, result
            return
        from dask.distributed import wait

        n_threads = sum(client.nthreads().values()) or 1
        limit = max_in_flight or 2 * n_threads
        pending = iter(jobs)
        futures = {}

        def submit_next() -> bool:
            job = next(pending, _DONE)
            if job is _DONE:
                return False
            futures[client.submit(fn, job, pure=False)] = job
            return True

        for _ in range(limit):
            if not submit_next():
                break
        # Only a cluster this process made is watched: the workers of an external
        # scheduler may leave and join (adaptive clusters scale to zero) by design.
        watch = getattr(client, "cluster", None) is not None
        workerless_since = None
        try:
            while futures:
                try:
                    done = wait(list(futures), timeout=poll_s, return_when="FIRST_COMPLETED").done
                except TimeoutError:  # no job finished within poll_s
                    done = set()
                if not done:
                    if watch and not client.scheduler_info().get("workers"):
                        workerless_since = workerless_since or time.monotonic()
                        if time.monotonic() - workerless_since > workerless_timeout_s:
                            raise UserError(
                                f"{desc}: every worker process of the local Dask cluster is "
                                f"gone (killed, or out of memory) and none came back in "
                                f"{workerless_timeout_s:g} s; the finished jobs are kept: run "
                                "the same command again to continue"
                            )
                    else:
                        workerless_since = None
                    continue
                for future in done:
                    result = future.result()
                    job = futures.pop(future)
                    future.release()
                    bar.update()
                    yield job, result
                    submit_next()
        finally:
            for future in list(futures):
                future.cancel()


_DONE = object()
