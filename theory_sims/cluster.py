"""Independent jobs on a Dask cluster: in this process, on a local cluster, or on your scheduler.

The sweep (a point x data seed per job), the Gaussian grid (a cell per job) and the CIFAR
experiment (a seed, a student or the trained average per job) all hand this module a list of
:class:`Job` s and get back one record per job. Where they run is one flag, the same in every CLI:

* ``--cluster serial``: one after the other in this process (what the code did before Dask);
* ``--cluster local``: a ``distributed.LocalCluster`` of ``--workers N`` processes (default: the
  number of cores), one thread each, with BLAS, OpenMP, numba and torch held to that one thread
  so that workers do not oversubscribe the cores;
* ``--cluster tcp://HOST:PORT`` (or ``$DASK_SCHEDULER_ADDRESS``): an existing scheduler, e.g.
  ``dask scheduler`` plus ``MALLOC_ARENA_MAX=1 dask worker tcp://HOST:PORT --nthreads 1`` on each
  machine (the variable keeps a worker thread's large blocks for reuse: ``PRE_SPAWN_ENV``; add
  ``--resources GPU=1``, one worker per GPU, for CIFAR jobs), or dask-jobqueue's ``SLURMCluster``.

Every finished job's record is written atomically as ``RECORDS/<key>.json`` by the process that
ran it, so the run folder must be on storage every worker sees. A job whose record exists is not
run again: a resumed run skips what it finished, and a job that Dask retries after its worker died
returns the record if the lost worker had written it. Jobs name the jobs they need (``after``);
a job runs only once their records exist (CIFAR students read their teachers' checkpoints from
the run folder). A job's result depends on its arguments only (every seed is in them), so where
and in which order jobs ran never changes a result: records are JSON, the same in every mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from multiview.checks import check_int

ENV_VAR = "DASK_SCHEDULER_ADDRESS"
MODES = ("serial", "local")
ADDRESS_SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "inproc://")
CONNECT_TIMEOUT_S = 5
# Threads of every library a job may use, held to the worker's one thread before the libraries load.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    """One independent piece of work: ``fn(*args)`` returns a JSON-able record.

    ``fn`` must be a module-level function (workers import it by name); ``after`` names jobs of
    the same list whose records must exist before this one starts; ``gpu`` asks for a worker
    that advertises a ``GPU`` resource, where the cluster's workers advertise any. ``cost``, a
    rough relative run time, orders a cluster's queue: the longest jobs start first, so that none
    of them runs alone at the end (it never changes a result). ``ident``, what the record depends
    on where ``args`` hold more (a folder's path, a device): the job's record carries a fingerprint
    of ``fn`` and ``ident`` (default: ``args``), and a record of another job is not read back.
    """

    key: str
    fn: Callable
    args: tuple = ()
    after: tuple[str, ...] = ()
    gpu: bool = False
    cost: float = 1.0
    ident: object = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the function's name and what its record depends on (``ident`` or ``args``)."""
        what = self.args if self.ident is None else self.ident
        text = json.dumps([f"{self.fn.__module__}.{self.fn.__qualname__}", what], sort_keys=True, default=_canonical)
        return hashlib.sha256(text.encode()).hexdigest()

    def __post_init__(self):
        if not self.key or any(c in self.key for c in '/\\:*?"<>| '):
            raise ValueError(f"job key must be a non-empty file name without /\\:*?\"<>| or spaces, got {self.key!r}")


@dataclass(frozen=True)
class Where:
    """Where jobs run: ``mode`` 'serial', 'local' (with ``workers``) or 'address' (with ``address``)."""

    mode: str = "serial"
    workers: int = 1
    address: str | None = None


# Where a command's default is "auto": a local cluster only from this many cores. Below it one job
# already keeps every core busy, and a local cluster of one-thread workers only adds its start-up
# and each worker's imports: on 2 cores gaussian_negative --quick ran at 0.76x and 0.55x of serial
# (docs/performance.md, "Many jobs: Dask").
AUTO_LOCAL_CORES = 4


def _auto_mode() -> str:
    return "local" if (os.cpu_count() or 1) >= AUTO_LOCAL_CORES else "serial"


def add_flags(parser, default: str) -> None:
    """``--cluster`` and ``--workers`` (parsed defaults None, resolved by :func:`where`); ``default``
    is 'serial', 'local' or 'auto' (local from AUTO_LOCAL_CORES cores, serial below)."""
    shown = default if default != "auto" else (
        f"auto: local on {AUTO_LOCAL_CORES} or more cores, serial below, where one job already uses every core; "
        f"{_auto_mode()} here, {os.cpu_count()} cores")
    g = parser.add_argument_group("where the jobs run (Dask; see python -m theory_sims.cluster --help)")
    g.add_argument("--cluster", default=None, metavar="serial|local|tcp://HOST:PORT",
                   help=f"'serial': one job after the other in this process; 'local': a local Dask cluster of "
                        f"--workers processes; tcp://HOST:PORT: an existing Dask scheduler, whose workers must "
                        f"see the run folder (shared storage) (default: ${ENV_VAR} if set, else {shown})")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"worker processes of --cluster local, one thread each (default: the number of cores, "
                        f"{os.cpu_count()} here)")
    parser.set_defaults(_cluster_default=default)


def where(args) -> Where:
    """The :class:`Where` of parsed ``args``; ValueError naming the flag for a bad value."""
    text = args.cluster if args.cluster is not None else os.environ.get(ENV_VAR) or args._cluster_default
    if text == "auto":  # --workers asks for a local cluster; otherwise the cores decide
        text = "local" if args.workers is not None else _auto_mode()
    flag = "--cluster" if args.cluster is not None else (f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "--cluster")
    if args.workers is not None:
        check_int("--workers", args.workers, 1)
        if text != "local":
            raise ValueError(f"--workers sets the size of --cluster local, got --cluster {text}")
    if text == "serial":
        return Where("serial")
    if text == "local":
        return Where("local", workers=args.workers or os.cpu_count() or 1)
    if text.startswith(ADDRESS_SCHEMES) and len(text) > len(text.split("://")[0]) + 3:
        w = Where("address", address=text)
        _client(w)[0].close()  # fail now, in one line, before a run folder is made
        return w
    raise ValueError(f"{flag} must be serial, local or a scheduler address like tcp://HOST:PORT, got {text!r}")


def _canonical(obj):
    """JSON for what ``json`` cannot write of a job's arguments: dataclasses (by type and fields),
    paths, numpy values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__qualname__, **{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"a job argument of type {type(obj).__name__} has no fingerprint; give the Job an ident")


def _record_path(records: Path, key: str) -> Path:
    return Path(records) / f"{key}.json"


def _limit_threads(n: int) -> None:
    """Hold BLAS/OpenMP (threadpoolctl), numba and torch to ``n`` threads in this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def execute(fn: Callable, args: tuple, record_path: str, *_after, made_by: str | None = None):
    """Run one job where it was sent and write its record atomically; an existing record is
    returned instead (a job retried after its worker died, or a resumed run). ``_after``: the
    records of the jobs it waited for (Dask passes them; the job reads what it needs from disk);
    ``made_by``: the job's fingerprint (:attr:`Job.fingerprint`), kept beside the record."""
    from theory_sims.results import as_json

    path = Path(record_path)
    if path.exists():
        return read_record(path, made_by)
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError):
        threads = None  # not on a Dask worker: leave the libraries' threads as they are
    if threads is not None:
        for name in _THREAD_ENV:  # for libraries the job imports first (each reads its variable once)
            os.environ[name] = str(threads)
        _limit_threads(threads)  # for those already loaded
    t0 = time.perf_counter()
    record = as_json(fn(*args))
    write_record(path, record, wall_s=time.perf_counter() - t0, made_by=made_by)
    return record


class BadRecord(ValueError):
    """A job record that cannot be read back as written (truncated, edited, another format)."""


def _digest(record) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def write_record(path, record, wall_s: float | None = None, made_by: str | None = None) -> None:
    """A job's record, atomically, with the SHA-256 of its canonical JSON beside it and, when
    given, the wall time the job took where it ran (read back by :func:`earlier_work`) and the
    fingerprint of the job that made it (:attr:`Job.fingerprint`)."""
    from theory_sims.results import write_json

    write_json(path, {"sha256": _digest(record), "record": record,
                      **({"wall_s": float(wall_s)} if wall_s is not None else {}),
                      **({"made_by": made_by} if made_by is not None else {})})


def read_record(path, made_by: str | None = None):
    """The record ``write_record`` wrote; :class:`BadRecord` naming the file if it is unreadable,
    its content no longer matches its checksum, or (given ``made_by``) another job made it.
    Records written before fingerprints were kept carry none and are read as before."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BadRecord(f"{path}: unreadable ({type(err).__name__})") from None
    if not isinstance(saved, dict) or set(saved) - {"wall_s", "made_by"} != {"sha256", "record"}:
        raise BadRecord(f"{path}: not a job record of this version (no checksum)")
    if _digest(saved["record"]) != saved["sha256"]:
        raise BadRecord(f"{path}: its content does not match its checksum (edited or damaged)")
    if made_by is not None and saved.get("made_by", made_by) != made_by:
        raise BadRecord(f"{path}: the record of another job (other settings or seeds than this run's)")
    return saved["record"]


def earlier_work(records, keys) -> dict:
    """What the jobs ``keys`` (records kept from earlier processes of a resumed run) cost where they
    ran: ``{"jobs": n, "wall_s": sum}``, so that a resumed run's timings add up to the whole run.
    Records written before job times were kept count in ``jobs`` only (``"untimed"`` says how many)."""
    total, untimed = 0.0, 0
    for k in keys:
        try:
            wall = json.loads(_record_path(Path(records), k).read_text()).get("wall_s")
        except (OSError, ValueError, AttributeError):
            wall = None
        if isinstance(wall, (int, float)):
            total += float(wall)
        else:
            untimed += 1
    return {"jobs": len(keys), "wall_s": total, **({"untimed": untimed} if untimed else {})}


def format_total(timing: dict, what: str = "job", on: str = "") -> str:
    """A command's last words on time: ``timing["total"]`` of this process (``on`` a machine, when
    given) and what the work kept from earlier processes took (``timing["earlier_processes"]``)."""
    return f"total {timing['total']:.1f} s in this process{on}{format_earlier(timing.get('earlier_processes'), what)}"


def format_earlier(work: dict, what: str = "job") -> str:
    """The words a resumed run prints after its own time: what the kept jobs (or ``what``) took before."""
    if not work or not work.get("jobs"):
        return ""
    untimed = f" ({work['untimed']} of them untimed)" if work.get("untimed") else ""
    return (f"; plus {work['jobs']} {what}(s) kept from an earlier process, which took {work['wall_s']:.1f} s "
            f"there{untimed}")


# Set in each worker process before it starts (glibc reads it once). A Dask worker runs its jobs in
# a second thread, whose malloc arena cannot hold blocks above 64 MiB: each of torch's large
# activations was then mapped and zeroed afresh at every step, and a Gaussian-grid conv cell took
# 80 s on a worker against 47 s in a plain one-thread process. One arena keeps the freed blocks.
PRE_SPAWN_ENV = {"MALLOC_ARENA_MAX": "1"}


def _client(w: Where):
    from distributed import Client, LocalCluster

    if w.mode == "local":
        import dask

        env = {name: "1" for name in _THREAD_ENV}
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in PRE_SPAWN_ENV.items()}):
            cluster = LocalCluster(n_workers=w.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   env=env, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    try:
        return Client(w.address, timeout=CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError) as err:
        raise ValueError(f"--cluster {w.address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
                         f"({type(err).__name__})") from None


_HELD: dict = {}  # Where -> (client, cluster) kept open by :func:`held`


@contextlib.contextmanager
def held(w: Where):
    """Keep one Dask client (and its local cluster) open for every :func:`run_jobs` call on ``w``
    inside the block, instead of one each: a command that runs many small rounds of jobs (the
    regime search runs a few data seeds of a trial at a time) pays the workers' start-up once."""
    if w.mode == "serial" or w in _HELD:
        yield
        return
    client, cluster = _client(w)
    _HELD[w] = (client, cluster)
    try:
        yield
    finally:
        del _HELD[w]
        client.close()
        if cluster is not None:
            cluster.close()


def _has_gpus(client) -> bool:
    return any("GPU" in (info.get("resources") or {}) for info in client.scheduler_info()["workers"].values())


def run_jobs(jobs: list[Job], records: str | os.PathLike, where_: Where = Where(), log=print,
             progress: bool = False, on_done: Callable | None = None, kept: list | None = None) -> dict:
    """Run every job of ``jobs`` whose record is not yet in ``records``; return {key: record} for
    all of them, in the order of ``jobs``. ``jobs`` must list every job after the ones it needs.
    ``on_done(key, record)`` is called in this process as each job finishes; a line it returns is
    printed (above the progress bar when there is one). ``kept``, a list, receives the keys whose
    record an earlier process wrote (a resumed run): see :func:`earlier_work`."""
    records = Path(records)
    records.mkdir(parents=True, exist_ok=True)
    keys = [j.key for j in jobs]
    if len(set(keys)) < len(keys):
        raise ValueError("job keys must be unique")
    seen: set[str] = set()
    for j in jobs:
        missing = [k for k in j.after if k not in seen]
        if missing:
            raise ValueError(f"job {j.key!r} needs {missing}, which must come before it in the list")
        seen.add(j.key)
    done = {}
    for j in jobs:
        k, path = j.key, _record_path(records, j.key)
        if path.exists():
            try:
                done[k] = read_record(path, j.fingerprint)
            except BadRecord as err:  # never tabulated: the job runs again and writes a good one
                log(f"{err}; running that job again")
                path.unlink()
    todo = [j for j in jobs if j.key not in done]
    if kept is not None:
        kept.extend(done)
    if done:
        log(f"{len(done)} of {len(jobs)} jobs already have records in {records}; running the other {len(todo)}")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="jobs", disable=not progress or not todo)

    def finished(key, record):
        done[key] = record
        bar.update()
        line = on_done(key, record) if on_done is not None else None
        if line is not None:
            bar.write(line) if not bar.disable else log(line)

    if where_.mode == "serial" or not todo:
        for j in todo:
            finished(j.key, execute(j.fn, j.args, str(_record_path(records, j.key)), made_by=j.fingerprint))
    else:
        _run_on_dask(todo, records, where_, log, finished)
    bar.close()
    return {k: done[k] for k in keys}


def _run_on_dask(todo: list[Job], records: Path, where_: Where, log, finished) -> None:
    from distributed import as_completed

    mine = where_ not in _HELD
    client, cluster = _client(where_) if mine else _HELD[where_]
    try:
        try:
            import bokeh  # noqa: F401

            dashboard = client.dashboard_link
        except ImportError:
            dashboard = f"{client.dashboard_link} (serves pages once bokeh is installed)"
        size = len(client.scheduler_info()["workers"])
        log(f"dask: {size} workers at {client.scheduler.address}; dashboard {dashboard}")
        gpus = _has_gpus(client)
        run_id = uuid.uuid4().hex[:8]
        futures, owner = {}, {}
        # the costliest first: in the order of submission (idle workers take the first that come)
        # and by priority (Dask starts the highest first); jobs that wait for others keep the list's order
        rank = {j.key: i for i, j in enumerate(sorted(todo, key=lambda j: j.cost))}
        order = todo if any(j.after for j in todo) else sorted(todo, key=lambda j: -j.cost)
        for j in order:
            after = [futures[k] for k in j.after if k in futures]
            fut = client.submit(execute, j.fn, j.args, str(_record_path(records, j.key)), *after,
                                made_by=j.fingerprint, key=f"{j.key}-{run_id}", pure=False, priority=rank[j.key],
                                resources={"GPU": 1} if j.gpu and gpus else None)
            futures[j.key], owner[fut.key] = fut, j.key
        for fut in as_completed(list(futures.values())):
            finished(owner[fut.key], fut.result())
    finally:
        if mine:
            client.close()
            if cluster is not None:
                cluster.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m theory_sims.cluster --help``: how to run the project's jobs on a cluster."""
    from multiview.cli import Parser

    p = Parser(prog="python -m theory_sims.cluster", description=__doc__ + '''
Commands that take these flags: python -m theory_sims.sweep, python -m theory_sims.gaussian_negative
(both default to --cluster auto: local on 4 or more cores, else serial) and python -m
real_data.reproduce (default serial).

    python -m theory_sims.gaussian_negative --cluster local --workers 2
    dask scheduler &                                        # on one machine
    MALLOC_ARENA_MAX=1 dask worker tcp://HOST:8786 --nthreads 1 &   # on each machine, one per core
    python -m theory_sims.sweep --cluster tcp://HOST:8786 --out /shared/runs/sweep ...
    MALLOC_ARENA_MAX=1 dask worker tcp://HOST:8786 --nthreads 1 --resources GPU=1   # one per GPU
''')
    p.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
