"""Jobs on Dask: a local cluster gives the serial run's results bit for bit (timings aside), a
worker killed mid-run costs only its job, --resume runs only the missing jobs, bad flags exit 2.

The clusters here are real ``distributed.LocalCluster`` s of 2 worker processes on this machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time

import pytest

from theory_sims import cluster
from theory_sims import gaussian_negative as gn
from theory_sims import sweep

from test_gaussian_negative import TINY_FLAGS
from test_sweep import SMALL, VARY

import distributed  # a dependency: its absence must fail, not skip, the cluster tests

TIMINGS = {"wall_s", "cpu_s", "timing_s", "images_per_s", "throughput"}


def without_timings(obj):
    """``obj`` with every timing field dropped, recursively (timings differ run to run)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMINGS}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def sweep_rows(folder):
    return without_timings(json.loads((folder / "sweep.json").read_text())["runs"])


@pytest.fixture(scope="module")
def dask_cluster():
    """A LocalCluster of 2 single-threaded worker processes shared by the tests of this module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env={name: "1" for name in cluster._THREAD_ENV},
                                  silence_logs=logging.ERROR) as lc:
        yield lc


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "sweep"
    assert sweep.main(SMALL + VARY + ["--cluster", "serial", "--out", str(out)]) == 0
    return out


def test_sweep_on_a_local_cluster_of_two_workers_equals_serial(serial_sweep, tmp_path):
    out = tmp_path / "sweep"
    assert sweep.main(SMALL + VARY + ["--cluster", "local", "--workers", "2", "--out", str(out)]) == 0
    assert sweep_rows(out) == sweep_rows(serial_sweep)
    assert sorted(p.name for p in (out / "jobs").iterdir()) == sorted(p.name for p in (serial_sweep / "jobs").iterdir())


def test_random_feature_rows_on_one_thread_workers_equal_a_serial_run(dask_cluster, tmp_path):
    """The random-feature family too: its read-out products and the step's small torch ops must
    not depend on the threads (one per worker here, all the cores in the serial run)."""
    rf = [a for a in SMALL if a != "--no-random-features"] + ["--rf-steps", "40", "--data-seeds", "0,1"]
    serial, workers = tmp_path / "serial", tmp_path / "workers"
    assert sweep.main(rf + ["--cluster", "serial", "--out", str(serial)]) == 0
    assert sweep.main(rf + ["--cluster", dask_cluster.scheduler_address, "--out", str(workers)]) == 0
    rows = sweep_rows(serial)
    assert all(r.get("value_rf_ensemble") is not None for r in rows)
    assert sweep_rows(workers) == rows


def test_a_worker_killed_mid_run_loses_only_its_job(serial_sweep, dask_cluster, tmp_path):
    killed = []

    def kill_a_busy_worker():
        with distributed.Client(dask_cluster.scheduler_address, timeout=10) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                busy = [addr for addr, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    out = tmp_path / "sweep"
    assert sweep.main(SMALL + VARY + ["--cluster", dask_cluster.scheduler_address, "--out", str(out)]) == 0
    killer.join()
    assert killed, "no worker was busy to kill"
    assert sweep_rows(out) == sweep_rows(serial_sweep)


def test_resume_runs_only_the_missing_jobs(serial_sweep, tmp_path, capsys):
    half = tmp_path / "half"
    shutil.copytree(serial_sweep, half)
    (half / "sweep.json").unlink()
    records = sorted((half / "jobs").iterdir())
    for path in records[:2]:
        path.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in records[2:]}
    argv = [a for a in SMALL if a != "--quiet"] + VARY + ["--cluster", "serial", "--resume", str(half)]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 of 4 jobs already have records" in out
    assert {p.name: p.stat().st_mtime_ns for p in records[2:]} == kept
    # the time the kept jobs took in the first process is counted beside this one's
    earlier = json.loads((half / "sweep.json").read_text())["timing_s"]["earlier_processes"]
    took = [json.loads(p.read_text())["wall_s"] for p in records[2:]]
    assert earlier == {"jobs": 2, "wall_s": pytest.approx(sum(took))} and min(took) > 0
    assert f"plus 2 job(s) kept from an earlier process, which took {sum(took):.1f} s there" in out
    assert sweep_rows(half) == sweep_rows(serial_sweep)


def test_resume_reruns_a_damaged_or_edited_record_instead_of_tabulating_it(serial_sweep, tmp_path, capsys):
    half = tmp_path / "edited"
    shutil.copytree(serial_sweep, half)
    (half / "sweep.json").unlink()
    records = sorted((half / "jobs").iterdir())
    saved = json.loads(records[0].read_text())
    saved["record"] = json.loads(json.dumps(saved["record"]).replace("0.", "99.0"))  # every value edited
    records[0].write_text(json.dumps(saved))
    records[1].write_text(records[1].read_text()[:40])  # truncated
    argv = [a for a in SMALL if a != "--quiet"] + VARY + ["--cluster", "serial", "--resume", str(half)]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{records[0]}: its content does not match its checksum" in out
    assert f"{records[1]}: unreadable" in out and "2 of 4 jobs already have records" in out
    assert sweep_rows(half) == sweep_rows(serial_sweep)


def test_resume_reruns_a_record_copied_from_another_sweep(serial_sweep, tmp_path, capsys):
    """A record of the same key made by another job (here: another sweep's point, copied in) was
    tabulated as this run's: each record carries its job's fingerprint, and one of another job runs again."""
    half = tmp_path / "foreign"
    shutil.copytree(serial_sweep, half)
    (half / "sweep.json").unlink()
    records = sorted((half / "jobs").iterdir())
    shutil.copy(records[1], records[0])  # another point's record under this point's name
    argv = [a for a in SMALL if a != "--quiet"] + VARY + ["--cluster", "serial", "--resume", str(half)]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{records[0]}: the record of another job" in out and "3 of 4 jobs already have records" in out
    assert sweep_rows(half) == sweep_rows(serial_sweep)


def test_a_jobs_fingerprint_follows_its_function_and_arguments_or_ident():
    job = cluster.Job("a", gn.summarise, ([1, 2],))
    assert job.fingerprint == cluster.Job("b", gn.summarise, ([1, 2],), after=("c",), cost=3.0).fingerprint
    assert job.fingerprint != cluster.Job("a", gn.summarise, ([1, 3],)).fingerprint
    assert job.fingerprint != cluster.Job("a", gn.run_cell, ([1, 2],)).fingerprint
    # ident: what the record depends on where the arguments hold more (a folder that may move)
    moved = [cluster.Job("a", gn.summarise, ("/runs/x",), ident=[1]), cluster.Job("a", gn.summarise, ("/y",), ident=[1])]
    assert moved[0].fingerprint == moved[1].fingerprint
    with pytest.raises(TypeError, match="has no fingerprint; give the Job an ident"):
        _ = cluster.Job("a", gn.summarise, (object(),)).fingerprint


def test_records_from_before_fingerprints_are_read_as_before(tmp_path):
    cluster.write_record(tmp_path / "old.json", {"x": 1})  # no made_by: an older run's record
    assert cluster.read_record(tmp_path / "old.json", made_by="f" * 64) == {"x": 1}
    cluster.write_record(tmp_path / "new.json", {"x": 1}, made_by="a" * 64)
    assert cluster.read_record(tmp_path / "new.json", made_by="a" * 64) == {"x": 1}
    with pytest.raises(cluster.BadRecord, match="the record of another job"):
        cluster.read_record(tmp_path / "new.json", made_by="b" * 64)


def test_resume_refuses_a_command_that_describes_another_run(serial_sweep, capsys):
    with pytest.raises(SystemExit) as exc:
        sweep.main(SMALL + ["--vary", "learner.q=3,5", "--data-seeds", "0,1", "--resume", str(serial_sweep)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "describes another run" in err and "vary.learner.q" in err


def test_out_naming_an_existing_run_is_refused_and_left_alone(serial_sweep, capsys):
    before = (serial_sweep / "config.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        sweep.main(SMALL + ["--cluster", "serial", "--out", str(serial_sweep)])
    assert exc.value.code == 2 and "holds another run" in capsys.readouterr().err
    assert (serial_sweep / "config.json").read_bytes() == before


def test_gaussian_quick_grid_on_the_cluster_equals_serial(dask_cluster, tmp_path):
    results = {}
    for name, where in (("serial", "serial"), ("dask", dask_cluster.scheduler_address)):
        out = tmp_path / name
        assert gn.main(TINY_FLAGS + ["--quick", "--no-multiview", "--no-figures", "--cluster", where,
                                     "--out", str(out)]) == 0
        results[name] = without_timings(json.loads((out / "results.json").read_text()))
    assert results["dask"] == results["serial"]
    assert len(results["serial"]["cells"]) == len(gn.QUICK)


def test_cifar_smoke_run_on_the_cluster_equals_serial(dask_cluster, image_tree, tmp_path):
    """Bit for bit at the same torch thread count: torch's CPU convolutions sum in an order that
    depends on the number of threads (1 per worker), so the serial run here uses one thread too."""
    import torch

    from real_data.reproduce import main as reproduce_main

    results = {}
    threads = torch.get_num_threads()
    for name, where in (("serial", "serial"), ("dask", dask_cluster.scheduler_address)):
        out = tmp_path / name
        torch.set_num_threads(1)
        try:
            assert reproduce_main(["--preset", "smoke", "--data", str(image_tree), "--out", str(out), "--quiet",
                                   "--cluster", where]) == 0
        finally:
            torch.set_num_threads(threads)
        results[name] = without_timings(json.loads((out / "results.json").read_text()))
    assert results["dask"] == results["serial"]
    assert set(results["serial"]["jobs"]) == {"single-0", "single-1", "distill", "average"}


@pytest.mark.parametrize("flags, message", [
    (["--cluster", "tcp://127.0.0.1:1"], "--cluster tcp://127.0.0.1:1: no Dask scheduler answered within"),
    (["--cluster", "lokal"], "--cluster must be serial, local or a scheduler address like tcp://HOST:PORT, got 'lokal'"),
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["--cluster", "serial", "--workers", "2"], "--workers sets the size of --cluster local"),
])
def test_bad_cluster_flags_exit_2_with_one_line_and_write_nothing(flags, message, capsys, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        sweep.main(SMALL + flags + ["--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_environment_names_the_scheduler(monkeypatch):
    monkeypatch.setenv(cluster.ENV_VAR, "tcp://127.0.0.1:1")
    args = sweep.build_parser().parse_args([])
    with pytest.raises(ValueError, match="no Dask scheduler answered"):
        cluster.where(args)
    monkeypatch.delenv(cluster.ENV_VAR)
    assert cluster.where(sweep.build_parser().parse_args(["--cluster", "local"])) == \
        cluster.Where("local", workers=os.cpu_count())


@pytest.mark.parametrize("cores, flags, want", [
    (2, [], cluster.Where("serial")),
    (3, [], cluster.Where("serial")),
    (4, [], cluster.Where("local", workers=4)),
    (16, [], cluster.Where("local", workers=16)),
    (2, ["--workers", "2"], cluster.Where("local", workers=2)),  # --workers asks for the local cluster
])
def test_the_default_cluster_follows_the_cores(monkeypatch, cores, flags, want):
    """Below 4 cores one job already uses them all and a local cluster only adds its overheads."""
    monkeypatch.delenv(cluster.ENV_VAR, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    for build in (sweep.build_parser, gn.build_parser):
        assert cluster.where(build().parse_args(flags)) == want


def test_jobs_must_come_after_the_jobs_they_need(tmp_path):
    jobs = [cluster.Job("b", gn.summarise, ([],), after=("a",)), cluster.Job("a", gn.summarise, ([],))]
    with pytest.raises(ValueError, match="job 'b' needs \\['a'\\]"):
        cluster.run_jobs(jobs, tmp_path)
    with pytest.raises(ValueError, match="job key must be"):
        cluster.Job("a/b", gn.summarise)


def test_earlier_work_sums_the_kept_jobs_times_and_counts_untimed_records(tmp_path):
    cluster.write_record(tmp_path / "a.json", {"x": 1}, wall_s=2.5)
    cluster.write_record(tmp_path / "b.json", {"x": 2}, wall_s=4.0)
    cluster.write_record(tmp_path / "c.json", {"x": 3})  # written before job times were kept
    assert cluster.read_record(tmp_path / "a.json") == {"x": 1}  # the time is beside the record, not in it
    assert cluster.earlier_work(tmp_path, ["a", "b"]) == {"jobs": 2, "wall_s": 6.5}
    assert cluster.earlier_work(tmp_path, ["a", "c"]) == {"jobs": 2, "wall_s": 2.5, "untimed": 1}
    assert cluster.format_earlier(cluster.earlier_work(tmp_path, [])) == ""
    assert "1 of them untimed" in cluster.format_earlier(cluster.earlier_work(tmp_path, ["a", "c"]))


def _pid_job(i: int) -> dict:
    time.sleep(0.2)  # long enough that both workers take one
    return {"i": i, "pid": os.getpid()}


def test_held_keeps_one_set_of_workers_for_every_round_of_jobs(tmp_path):
    """Inside cluster.held, rounds of jobs run on the same worker processes; without it each round
    starts its own."""
    w = cluster.Where("local", 2)

    def rounds(name):
        pids = []
        for r in range(2):
            jobs = [cluster.Job(f"{name}-round{r}-job{i}", _pid_job, (i,)) for i in range(2)]
            pids.append({rec["pid"] for rec in cluster.run_jobs(jobs, tmp_path, w, log=lambda *a: None).values()})
        return pids

    with cluster.held(w):
        first, second = rounds("held")
    assert first == second and os.getpid() not in first
    first, second = rounds("apart")
    assert not first & second


def test_module_docstrings_state_the_defaults_the_code_has():
    """The --help texts (module docstrings) of the sweep and the Gaussian grid say when the default
    cluster is local, and which learner the grid uses by default, as the code decides it."""
    text = {mod.__name__: " ".join(mod.__doc__.split()) for mod in (sweep, gn)}
    for doc in text.values():
        assert f"local Dask cluster on a machine of {cluster.AUTO_LOCAL_CORES} or more cores" in doc
    assert f"by default the {gn.NegativeConfig().learner_kind} one" in text[gn.__name__]
