"""A sweep engine: many training runs, one run folder each, on Dask, resumable.

Every point of a sweep is one run folder (layout in `elmbridge.runs`) and one call of a
top-level worker function. The engine

- skips points whose folder is finished (`run_status`), so rerunning a killed sweep
  loses nothing; unfinished points are handed to the worker function again, which
  resumes them from their checkpoints (the training loops resume when given the same
  options);
- runs the others on Dask: a LocalCluster sized to the machine by default, an existing
  scheduler (`--scheduler ADDRESS`), or in this process (`"synchronous"`); points that
  need a GPU ask for the worker resource "GPU" (workers offer it with
  `dask worker --resources GPU=1`), a fraction of it when several points share a GPU;
- retries a failed point once, then records it as failed with its error, and goes on;
- shows one progress bar over the points with each running point's latest metric;
- with `pack=K`, runs up to K unfinished points whose `pack_key` agrees as one job
  (`pack_fn(jobs)`, one Dask task on one device: `elmnet.train_packed` for networks);
  a point with no partner runs alone with `fn`. Outcomes stay one per point.

What a point is, how its folder is named and what goes into the table is the caller's
business (`benchmarks.sweep` for ELM Networks, `surrogate.ablate` for single neurons).
"""

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from elmbridge.allocator import keep_freed_memory
from elmbridge.errors import UserError
from elmbridge.files import read_json, write_json
from elmbridge.parallel import SYNCHRONOUS, dask_client

__all__ = ["SYNCHRONOUS", "Outcome", "Point", "Resources", "run_sweep", "sweep_client"]
from elmbridge.runs import run_status

# Written by `timed_point` beside the run's own files: wall time and device of the runs.
POINT_FILE = "sweep_point.json"
# How often the progress bar reads the running points' metrics, seconds.
POLL_S = 2.0
_ADDRESS = re.compile(r"^((tcp|tls|ucx|ws|wss)://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$|^inproc://\S+$")


@dataclass(frozen=True)
class Point:
    """One sweep point.

    Attributes:
        name: its folder name (unique within the sweep).
        folder: the run folder, absolute (workers may run elsewhere).
        job: what the worker function gets (picklable).
        gpu: the share of one GPU it needs (0: none).
        members: the points of a pack (its job is their jobs, in order); () for a point.
    """

    name: str
    folder: str
    job: Any
    gpu: float = 0.0
    members: tuple["Point", ...] = ()


@dataclass
class Outcome:
    """What became of a point: "finished", "skipped" (finished before), "unfinished"
    (stopped early, e.g. by a per-point step limit) or "failed" (error holds why)."""

    point: Point
    status: str
    error: str = ""
    attempts: int = 0
    result: Any = None


@dataclass(frozen=True)
class Resources:
    """Where the points run.

    Attributes:
        scheduler: None (a new LocalCluster), "synchronous" (this process) or an address.
        workers: LocalCluster workers (default: one per point that fits the machine).
        threads: torch threads per point (default: cores // workers on a LocalCluster,
            1 on an existing cluster).
        gpus: GPUs of a LocalCluster (one worker each); 0 runs on CPU.
        points_per_gpu: points that share one GPU at a time.
        processes: LocalCluster workers as processes (False: threads, for tests).
    """

    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    gpus: int = 0
    points_per_gpu: int = 1
    processes: bool = True
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def check(self) -> None:
        """One-line errors for impossible settings (before anything starts)."""
        if self.scheduler not in (None, SYNCHRONOUS) and not _ADDRESS.match(self.scheduler):
            raise UserError(
                f"--scheduler {self.scheduler!r} is not a Dask scheduler address; give one "
                "like tcp://10.0.0.1:8786 (printed by `dask scheduler` or a dask-jobqueue "
                "cluster), or 'synchronous' to run in this process"
            )
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name} must be at least 1, got {value}")
        if self.gpus < 0 or self.points_per_gpu < 1:
            raise UserError(
                f"--gpus must be ≥ 0 and --points-per-gpu ≥ 1, got {self.gpus} and "
                f"{self.points_per_gpu}"
            )
        if self.scheduler is None and not self.gpus and self.workers and self.threads:
            if self.workers * self.threads > self.cores:
                raise UserError(
                    f"--workers {self.workers} × --threads {self.threads} exceeds this "
                    f"machine's {self.cores} cores; points would slow each other down"
                )

    def local_layout(self, n_points: int) -> tuple[int, int]:
        """(workers, torch threads per point) of a LocalCluster for `n_points` points."""
        if self.gpus:
            return self.gpus, self.threads or max(
                1, self.cores // (self.gpus * self.points_per_gpu)
            )
        workers = self.workers or max(1, min(self.cores, n_points))
        return workers, self.threads or max(1, self.cores // workers)

    def gpu_share(self) -> float:
        """The GPU resource one point asks for."""
        return 1.0 / self.points_per_gpu


@contextlib.contextmanager
def sweep_client(resources: Resources, n_points: int) -> Iterator[tuple[Any, int]]:
    """(Dask client or None for in-process, torch threads per point) for a sweep."""
    resources.check()
    if resources.scheduler == SYNCHRONOUS:
        yield None, resources.threads or resources.cores
        return
    if resources.scheduler is not None:
        with dask_client(resources.scheduler) as client:
            yield client, resources.threads or 1
        return
    import dask
    import distributed  # noqa: F401  (first: its config defaults must outlive config.set)

    workers, threads = resources.local_layout(n_points)
    gpu = {"GPU": 1.0} if resources.gpus else None
    slots = resources.points_per_gpu if resources.gpus else 1
    # Not daemonic, so that a point may start processes of its own (DataLoader workers).
    with (
        dask.config.set({"distributed.worker.daemon": False}),
        dask_client(
            None, workers, threads_per_worker=slots, processes=resources.processes, resources=gpu
        ) as client,  # fmt: skip
    ):
        yield client, threads


def worker_device(requested: str | None) -> str | None:
    """The device for a point: on a LocalCluster with several GPUs, worker i takes GPU i.

    A device with an index ("cuda:1") or "cpu" is kept as given.
    """
    if requested not in (None, "cuda"):
        return requested
    try:
        import torch
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not inside a Dask worker
        return requested
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2 or not isinstance(name, int):
        return requested
    return f"cuda:{name % torch.cuda.device_count()}"


def timed_point(folder: str | os.PathLike, device: str, fn: Callable[[], Any]) -> Any:
    """Run `fn()` for the point in `folder`, adding its wall time to the folder's
    `sweep_point.json` (seconds over all invocations that returned, and the device)."""
    return timed_points([folder], device, fn)


def timed_points(folders: Sequence[str | os.PathLike], device: str,
                 fn: Callable[[], Any]) -> Any:  # fmt: skip
    """`timed_point` for the K points of a pack run together by `fn()`: each is charged
    1/K of the wall time (its share of the device), and records the pack's size."""
    start = time.perf_counter()
    try:
        return fn()
    finally:
        share = (time.perf_counter() - start) / len(folders)
        for folder in folders:
            path = Path(folder) / POINT_FILE
            if path.parent.is_dir():
                before = read_json(path) if path.is_file() else {}
                write_json(path, {
                    "wall_s": round(before.get("wall_s", 0.0) + share, 3),
                    "device": device,
                    "invocations": before.get("invocations", 0) + 1,
                    "pack": len(folders),
                })  # fmt: skip


def pack_points(points: Sequence[Point], size: int, key: Callable[[Point], Any]) -> list[Point]:
    """The points in packs of up to `size` whose `key` agrees, in the order of their first
    member; a point with no partner stays itself. A pack's GPU share is its largest
    member's: it runs on one device as one job."""
    groups: dict[Any, list[Point]] = {}
    for point in points:
        groups.setdefault(key(point), []).append(point)
    out = []
    for members in groups.values():
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) == 1:
                out.append(chunk[0])
                continue
            out.append(Point(
                name=f"pack-{chunk[0].name}+{len(chunk) - 1}", folder=chunk[0].folder,
                job=[m.job for m in chunk], gpu=max(m.gpu for m in chunk), members=tuple(chunk),
            ))  # fmt: skip
    return out


def point_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's `sweep_point.json` ({} when the point never returned)."""
    path = Path(folder) / POINT_FILE
    return read_json(path) if path.is_file() else {}


def one_line(err: BaseException) -> str:
    """An exception as one line for the table: its type and the first line of its text."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


def run_sweep(
    points: Sequence[Point],
    fn: Callable[[Any], Any],
    client: Any | None,
    *,
    desc: str = "sweep",
    retries: int = 1,
    latest: Callable[[Point], str | None] | None = None,
    progress: bool = True,
    poll_s: float = POLL_S,
    pack: int = 1,
    pack_key: Callable[[Point], Any] | None = None,
    pack_fn: Callable[[list[Any]], Any] | None = None,
) -> list[Outcome]:
    """Run every unfinished point with `fn(point.job)`; one `Outcome` per point, in order.

    `fn` returns anything; the point then counts as finished when its folder says so
    (`run_status`), else as unfinished. An exception (or a lost worker) is retried
    `retries` times, then recorded. `latest(point)` gives the progress bar a point's
    latest metric ("dm9_s0: step 400 acc 0.61"); it is polled every `poll_s` seconds.
    With `pack` > 1, up to `pack` unfinished points of equal `pack_key(point)` run as one
    job `pack_fn([jobs])` (`pack_points`), which returns one result per member; a failed
    pack is retried as a pack and, failing again, fails each of its points.
    """
    if pack < 1:
        raise UserError(f"--pack must be at least 1, got {pack}")
    if pack > 1 and (pack_key is None or pack_fn is None):
        raise ValueError("packing needs pack_key and pack_fn")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise UserError("two points of the sweep share a run folder; remove the duplicates")
    outcomes = {p.name: Outcome(p, "skipped") for p in points if run_status(p.folder).finished}
    todo = [p for p in points if p.name not in outcomes]
    if pack > 1:
        todo = pack_points(todo, pack, pack_key)

    def work(point: Point):
        return pack_fn if point.members else fn

    bar = tqdm(total=len(points), initial=len(outcomes), desc=desc, unit="point",
               disable=not progress)  # fmt: skip
    if outcomes:
        bar.write(f"{len(outcomes)} of {len(points)} points finished before; skipping them")
    try:
        if client is None:
            for point in todo:
                outcomes.update(_per_point(_run_here(point, work(point), retries, bar)))
                _show(bar, [point], latest)
                bar.update(len(point.members) or 1)
        else:
            outcomes.update(_run_on_dask(todo, work, client, retries, bar, latest, poll_s))
    finally:
        bar.close()
    return [outcomes[p.name] for p in points]


def _status(point: Point) -> str:
    return "finished" if run_status(point.folder).finished else "unfinished"


def _per_point(outcome: Outcome) -> dict[str, Outcome]:
    """{name: outcome} of a point, or of each member of a pack (its own folder's status,
    its own item of the pack's results)."""
    if not outcome.point.members:
        return {outcome.point.name: outcome}
    members = outcome.point.members
    results = outcome.result if isinstance(outcome.result, list) else [None] * len(members)
    return {
        m.name: Outcome(m, "failed" if outcome.status == "failed" else _status(m),
                        error=outcome.error, attempts=outcome.attempts, result=r)
        for m, r in zip(members, results, strict=True)
    }  # fmt: skip


def _run_here(point: Point, fn, retries: int, bar) -> Outcome:
    error = ""
    for attempt in range(1, retries + 2):
        try:
            result = fn(point.job)
        except Exception as err:  # any failure of one point is recorded, never fatal
            error = one_line(err)
            bar.write(f"{point.name}: attempt {attempt} failed: {error}")
            continue
        return Outcome(point, _status(point), attempts=attempt, result=result)
    return Outcome(point, "failed", error=error, attempts=retries + 1)


def _keeping_freed_memory(fn, job):
    """`fn(job)` on a Dask worker, whose process keeps freed memory for reuse as a
    command's own process does (`elmbridge.allocator`; workers never pass through
    `run_cli`): each training call frees and takes again tens of MB."""
    keep_freed_memory()
    return fn(job)


def _run_on_dask(points, work, client, retries, bar, latest, poll_s) -> dict[str, Outcome]:
    from distributed import wait

    if any(p.gpu for p in points):
        offered = [w.get("resources", {}).get("GPU", 0)
                   for w in client.scheduler_info()["workers"].values()]  # fmt: skip
        if not any(offered):
            raise UserError(
                "the points need GPUs, but no worker of the Dask cluster offers the resource "
                "GPU; start the workers with `--resources GPU=1` (docs/cluster.md)"
            )

    def submit(point: Point, attempt: int):
        return client.submit(
            _keeping_freed_memory, work(point), point.job, key=f"sweep-{point.name}-{attempt}",
            pure=False, resources={"GPU": point.gpu} if point.gpu else None,
        )  # fmt: skip

    running = {submit(p, 1): (p, 1) for p in points}
    done: dict[str, Outcome] = {}
    try:
        while running:
            try:
                finished, _ = wait(list(running), timeout=poll_s, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished within poll_s: refresh the bar, wait on
                finished = set()
            for future in finished:
                point, attempt = running.pop(future)
                if future.status == "finished":
                    done.update(_per_point(Outcome(point, _status(point), attempts=attempt,
                                                   result=future.result())))  # fmt: skip
                    bar.update(len(point.members) or 1)
                    continue
                try:
                    error = one_line(future.exception())
                except Exception as err:  # a cancelled future has no exception to give
                    error = one_line(err)
                bar.write(f"{point.name}: attempt {attempt} failed: {error}")
                if attempt <= retries:
                    running[submit(point, attempt + 1)] = (point, attempt + 1)
                else:
                    done.update(_per_point(Outcome(point, "failed", error=error,
                                                   attempts=attempt)))  # fmt: skip
                    bar.update(len(point.members) or 1)
            _show(bar, [p for p, _ in running.values()], latest)
    finally:
        for future in running:
            future.cancel()
    return done


def _show(bar, points: list[Point], latest) -> None:
    if latest is None or bar.disable:
        return
    texts = [text for p in points[:3] if (text := latest(p.members[0] if p.members else p))]
    if texts or not points:  # nothing running: no stale metric
        bar.set_postfix_str("; ".join(texts), refresh=True)
