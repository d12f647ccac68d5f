"""Ensemble, knowledge distillation, self-distillation and training the average on CIFAR.

The real-data side of Allen-Zhu & Li (arXiv 2012.09816). One run:

1. trains ``--seeds`` single models from different random inits (and batch orders);
2. scores each on the test set (no test-time augmentation) and their **ensemble**: the argmax of
   the mean of the models' logits, the paper's definition (``--ensemble softmax``: of the mean of
   their softmax outputs; :func:`theory_sims.stats.ensemble_output`);
3. **KD**: ``--students`` fresh models distilled from the whole ensemble; **self-KD**: fresh model
   s distilled from single model s (s < students); the KD loss is
   ``alpha * CE + (1 - alpha) * T^2 * KL(teacher || student)`` with batchmean reduction, the
   teacher's target being ``softmax(mean_s z_s / T)`` over its members' logits on the same
   augmented batch (``--ensemble softmax``: the mean of ``softmax(z_s / T)``). All 2 x students
   train in one job ("distill") on the same batches, so each teacher runs once per batch for all
   of them; each student's update is the one it would get alone on those batches;
4. **training the average**: ``--average-members`` models trained jointly as one model whose
   output is the mean of their logits;
5. the **ensemble of the KD students**;
6. prints the table next to the paper's numbers and writes ``config.json``, ``results.json``,
   ``table.csv``, ``accuracy.png`` and ``report.md`` (the run on one page; and checkpoints: one per
   job, and ``kd-s.pt``, ``self_kd-s.pt`` for each student) to the run folder.

Every job (a seed, the students, the average) checkpoints after each epoch; ``--resume RUN_FOLDER``
continues a killed run with the config saved there and gives the result the uninterrupted run
would have given (a checkpoint that no longer loads is kept as ``NAME.pt.damaged`` and its job
trained again). Jobs run through :mod:`theory_sims.cluster`: one after another here by default
(``--cluster serial``), or on a Dask cluster (``--cluster local`` or ``tcp://HOST:PORT``; workers
that advertise ``--resources GPU=1`` take one job per GPU). Students start once their teachers'
jobs have finished and read them from ``RUN/checkpoints``, so with a remote scheduler the run
folder must be on storage every worker sees. ``--config RUN_FOLDER`` starts a new run from an
earlier one's saved config, data path and device, flags given beside it overriding them: the same
flags re-create the run.

Example::

    python -m real_data.reproduce --dataset cifar10 --data ../shared/data/cifar10-jpg.tar.gz --preset cpu
    python -m real_data.reproduce --dataset cifar10 --data PATH --model fast --seeds 10 --device cuda
    python -m real_data.reproduce --config runs/reproduce-X --seeds 20 --out runs/reproduce-20
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from multiview.checks import check_choice, check_float, check_instance, check_int
from multiview.cli import (Parser, add_config_flags, as_flag, fail, given, param, progress_bars, refuse_inert,
                          require_cuda)
from real_data.baselines import MODES
from real_data.data import ENV_VAR, OFFICIAL, DataError
from real_data.models import MODELS
from real_data.train import TrainSpec
from theory_sims import cluster

# The paper's WideResNet-28-10 numbers and a fast public replication (../shared/DESIGN.md).
PAPER = {
    "cifar10": {"individual": 96.70, "ensemble": 97.20, "kd": 97.22, "self_kd": 97.13, "average": 96.46},
    "cifar100": {"individual": 81.51, "ensemble": 84.69, "kd": 83.81, "self_kd": 83.56, "average": 81.83},
}
FAST_REPLICATION = {"cifar10": {"individual": 93.33, "ensemble": 95.01, "self_kd": 93.46, "kd": 93.73}}
# The paper's random-feature (NTK) rows, the reference for --mode random_features and --mode ntk.
PAPER_RANDOM_FEATURES = {
    "cifar10": {"individual": 66.68, "ensemble": 70.54, "kd": 66.01, "self_kd": 61.92, "average": 72.86},
    "cifar100": {"individual": 31.90, "ensemble": 38.32, "kd": 31.38, "self_kd": 27.64, "average": 41.47},
}


CALIBRATION_IMAGES = 1024  # batch-norm statistics of the random-feature and linearised networks


@dataclass(frozen=True)
class ReproduceConfig:
    dataset: str = param("'cifar10' or 'cifar100'", "cifar10")
    labels: str = param("CIFAR-100 labels: 'fine' (100 classes) or 'coarse' (20)", "fine")
    model: str = param("'fast' (airbench-style) or 'wrn' (WideResNet)", "fast")
    mode: str = param("'full' (train the network), 'random_features' (frozen random network, trained "
                      "linear read-out) or 'ntk' (the network linearised around its init)", "full")
    depth: int = param("WideResNet depth (6n + 4)", 28)
    width: float = param("WideResNet widening factor k, or the fast net's channel multiplier", 1.0)
    dropout: float = param("WideResNet dropout", 0.0)
    seeds: int = param("single models (ensemble members)", 10)
    students: int = param("KD students (from the ensemble) and self-KD students (seed s -> fresh seed)", 3)
    average_members: int = param("models trained jointly as their average", 10)
    stack: bool = param("train the single seeds as one stacked network (fast net, full mode only; they then "
                        "share batch order and augmentation). On 2 CPU cores a loop was faster", False)
    n_train: int = param("training images used (0: all)", 0)
    n_test: int = param("test images used (0: all)", 0)
    seed: int = param("base seed; model s uses seed + s, students seed + 500 + s", 0)
    spec: TrainSpec = dataclasses.field(default_factory=TrainSpec)

    def __post_init__(self):
        check_instance("spec", self.spec, TrainSpec)
        check_choice("dataset", self.dataset, tuple(OFFICIAL))
        check_choice("labels", self.labels, ("fine", "coarse"))
        check_choice("model", self.model, MODELS)
        check_choice("mode", self.mode, MODES)
        if self.labels != "fine" and self.dataset != "cifar100":
            raise ValueError(f"labels must be 'fine' unless dataset is 'cifar100' (CIFAR-10 has one label set), "
                             f"got {self.labels!r}")
        check_float("width", self.width, 0.0, lo_open=True)
        check_float("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if self.model == "wrn":
            if self.depth < 10 or (self.depth - 4) % 6:
                raise ValueError(f"depth must be 6n + 4 with n >= 1 for model 'wrn' (10, 16, 22, 28, ...), "
                                 f"got {self.depth}")
            if self.width < 1 or float(self.width) != int(self.width):
                raise ValueError(f"width must be an integer >= 1 for model 'wrn' (its widening factor), got {self.width}")
        check_int("seeds", self.seeds, 1)
        check_int("students", self.students, 1, self.seeds)
        check_int("average_members", self.average_members, 1)
        if self.stack and (self.model != "fast" or self.mode != "full"):
            raise ValueError(f"stack must be False unless model='fast' and mode='full', got model={self.model!r}, "
                             f"mode={self.mode!r}")
        check_int("n_train", self.n_train, 0)
        check_int("n_test", self.n_test, 0)
        check_int("seed", self.seed, 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReproduceConfig":
        d = dict(d)
        return cls(spec=TrainSpec(**d.pop("spec")), **d)


PRESETS = {
    # The whole experiment on a small subset with a tiny net, in seconds: the CPU end-to-end test
    # (on CIFAR-10 its single models reach about 22%, not chance, so a training bug shows).
    "smoke": dict(model="fast", width=0.125, seeds=2, students=1, average_members=2, n_train=1000, n_test=500,
                  spec=dict(epochs=4, batch_size=64, lr=0.2)),
    # The paper's pattern on a 2-core CPU: a narrow fast net that fits 5,000 training images
    # (40 epochs, no label smoothing), 5 seeds, 3 KD and 3 self-KD students, an average of 5.
    "cpu": dict(model="fast", width=0.25, seeds=5, students=3, average_members=5, n_train=5000,
                spec=dict(epochs=40, batch_size=256, lr=0.2, label_smoothing=0.0)),
    # The GPU recipe: the full fast net on all of CIFAR.
    "fast": dict(model="fast", width=1.0, seeds=10, students=3, average_members=10,
                 spec=dict(epochs=16, batch_size=512, lr=0.2, label_smoothing=0.2)),
    # The paper's WRN-28-10 schedule (days of GPU time for the whole experiment).
    "paper": dict(model="wrn", depth=28, width=10, seeds=10, students=1, average_members=10,
                  spec=dict(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="step")),
}


DEFAULT_PRESET = "fast"  # what a run without --preset starts from


def configure(preset: str = DEFAULT_PRESET, **overrides) -> ReproduceConfig:
    check_choice("preset", preset, PRESETS)
    spec_over = overrides.pop("spec", {})
    base = {**PRESETS[preset], **overrides}
    spec = TrainSpec(**{**base.pop("spec", {}), **spec_over})
    return ReproduceConfig(spec=spec, **base)


_FAST_PRESETS = ", ".join(name for name, p in PRESETS.items() if p.get("model", ReproduceConfig.model) == "fast")
# Flags that act only in some runs: (flag, argparse dest, whether it acts, the mode it needs); one
# the run would ignore is refused (multiview.cli.refuse_inert).
INERT_FLAGS = (
    *((f"--{name}", name, lambda c: c.model == "wrn", f"unless --model wrn (--preset {_FAST_PRESETS} train the "
                                                       f"fast net)") for name in ("depth", "dropout")),
    ("--warmup", "warmup", lambda c: c.spec.schedule == "onecycle", "unless --schedule onecycle"),
)


@functools.lru_cache(maxsize=1)
def _device_data(data_path: str, dataset: str, labels: str, cache_dir, n_train: int, n_test: int, seed: int,
                 device: str):
    """The run's images on ``device``, decoded once per process (every job of a process shares it)."""
    from real_data import data as rd
    from real_data import train as rt

    images = rd.load(data_path, dataset, labels, cache_dir=cache_dir)
    images = images.subset(n_train or None, n_test or None, seed=seed)
    return images, rt.DeviceData(images, device)


class _Run:
    """What every job of a run shares: the data on its device, the models' metadata, and
    ``new(seed)``, the network a job starts from (seeded, so the same everywhere)."""

    def __init__(self, cfg: ReproduceConfig, data_path, cache_dir, device: str):
        self.cfg = cfg
        self.images, self.dd = _device_data(str(data_path), cfg.dataset, cfg.labels,
                                            None if cache_dir is None else str(cache_dir),
                                            cfg.n_train, cfg.n_test, cfg.seed, device)
        dd = self.dd
        self.k = dd.num_classes
        self.calibration = dd.x_train[:CALIBRATION_IMAGES] if cfg.mode != "full" else None
        self.meta = {"model": cfg.model, "mode": cfg.mode, "num_classes": self.k, "depth": cfg.depth,
                     "width": cfg.width, "dropout": cfg.dropout, "mean": dd.mean.flatten().tolist(),
                     "std": dd.std.flatten().tolist(), "classes": list(self.images.classes)}

    def new(self, seed: int):
        import torch

        from real_data.baselines import wrap
        from real_data.models import make_model

        cfg = self.cfg
        torch.manual_seed(seed)
        return wrap(make_model(cfg.model, self.k, cfg.depth, cfg.width, cfg.dropout), cfg.mode, self.k,
                    self.calibration)

    def trained(self, ckpt: Path, name: str) -> list:
        """The models of finished job ``name``, rebuilt and loaded from its checkpoint."""
        from real_data.models import StackedFastNet
        from real_data.train import read_checkpoint

        spec = _model_specs(self.cfg)[name]
        state = read_checkpoint(ckpt / f"{name}.pt", self.dd.device)
        if name == "singles-stacked":
            stacked = StackedFastNet([self.new(seed) for seed in spec["members"]])
            stacked.load_state_dict(state["models"][0])
            models = stacked.unstack()
        else:
            models = [self.new(seed) for seed in spec["members"]]
            for m, sd in zip(models, state["models"]):
                m.load_state_dict(sd)
        return [m.to(self.dd.device).eval() for m in models]


def jobs_of(cfg: ReproduceConfig) -> list[dict]:
    """Every training job of a run, each after the jobs it needs: name, objective, the seeds of
    its models (``members``), the seed of its batch order and augmentation, and its teachers; the
    "distill" job also names its students and each one's teachers (``groups``, indices into
    ``teachers``): KD students learn from all the single models, self-KD student s from model s."""
    S, K = cfg.seeds, cfg.students
    singles = ([{"name": "singles-stacked", "objective": "ce", "members": [cfg.seed + s for s in range(S)],
                 "seed": cfg.seed, "teachers": []}] if cfg.stack else
               [{"name": f"single-{s}", "objective": "ce", "members": [cfg.seed + s], "seed": cfg.seed + s,
                 "teachers": []} for s in range(S)])
    teacher = (lambda s: ("singles-stacked", s)) if cfg.stack else (lambda s: (f"single-{s}", 0))  # noqa: E731
    students = ([(f"kd-{s}", cfg.seed + 500 + s, list(range(S))) for s in range(K)] +
                [(f"self_kd-{s}", cfg.seed + 700 + s, [s]) for s in range(K)])
    distill = [{"name": "distill", "objective": "kd", "members": [seed for _, seed, _ in students],
                "seed": cfg.seed + 500, "teachers": [teacher(t) for t in range(S)],
                "students": [name for name, _, _ in students], "groups": [g for _, _, g in students]}]
    average = [{"name": "average", "objective": "average", "seed": cfg.seed + 900,
                "members": [cfg.seed + 900 + s for s in range(cfg.average_members)], "teachers": []}]
    return singles + distill + average


def _model_specs(cfg: ReproduceConfig) -> dict:
    """Every checkpoint a run leaves, by name: the jobs' and each distilled student's, with the
    seeds of the models in it (``members``)."""
    specs = {j["name"]: j for j in jobs_of(cfg)}
    d = specs["distill"]
    specs.update({name: {"members": [seed]} for name, seed in zip(d["students"], d["members"])})
    return specs


def train_job(cfg: ReproduceConfig, data_path: str, cache_dir, device: str, out: str, name: str,
              progress: bool = False) -> dict:
    """Train job ``name`` of the run in folder ``out`` (resuming its checkpoint there) and return
    its record. Teachers are read from their checkpoints in ``out``, which their jobs finished."""
    from real_data import train as rt

    run_ = _Run(cfg, data_path, cache_dir, device)
    ckpt = Path(out) / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    spec = {j["name"]: j for j in jobs_of(cfg)}[name]
    teachers = []
    for job_name in dict.fromkeys(n for n, _ in spec["teachers"]):  # the teachers first, then the
        loaded = run_.trained(ckpt, job_name)                       # student: its init is last
        teachers += [loaded[i] for n, i in spec["teachers"] if n == job_name]
    if name == "singles-stacked":
        from real_data.models import StackedFastNet

        models = [StackedFastNet([run_.new(seed) for seed in spec["members"]])]
    else:
        models = [run_.new(seed) for seed in spec["members"]]
    _check_checkpoint(ckpt / f"{name}.pt", cfg.spec.to_dict(), spec["seed"], spec["objective"], run_.meta)
    record = rt.fit(models, run_.dd, cfg.spec, spec["seed"], spec["objective"], teachers or None,
                    ckpt / f"{name}.pt", progress, desc=name, meta=run_.meta, groups=spec.get("groups"))
    # Each student also gets a checkpoint of its own, in a job checkpoint's format (for visualize).
    for student, model in zip(spec.get("students", ()), models):
        rt.save_atomic({"models": [model.state_dict()], "record": record, "spec": cfg.spec.to_dict(),
                        "seed": spec["seed"], "objective": spec["objective"], "meta": run_.meta},
                       ckpt / f"{student}.pt")
    return record


def _check_checkpoint(path: Path, spec: dict, seed: int, objective: str, meta: dict) -> None:
    """A job's checkpoint is resumed only if it was trained under the same config: the same
    training spec, seed, objective, network and data normalisation; otherwise ValueError."""
    if not path.exists():
        return
    from real_data.train import read_checkpoint

    state = read_checkpoint(path)
    there = {"spec": state.get("spec"), "seed": state.get("seed"), "objective": state.get("objective"),
             "meta": state.get("meta")}
    here = {"spec": spec, "seed": seed, "objective": objective, "meta": meta}
    for key in here:
        if there[key] != here[key]:
            diff = (sorted(k for k in here[key] if there[key] is None or there[key].get(k) != here[key][k])
                    if isinstance(here[key], dict) else [key])
            raise ValueError(f"checkpoint {path} was trained under another config ({key}: {', '.join(diff)} "
                             f"differ); continue that run with --resume, or start this one in a new --out")


def _retrain_damaged(cfg: ReproduceConfig, out: Path, log) -> None:
    """Before the jobs of a run in ``out``: a checkpoint that no longer loads (cut short by a crash
    during its write, a full disk) is named, kept as NAME.pt.damaged, and the job that writes it runs
    again, as for a missing one (its record, if it finished, kept as jobs/JOB.json.stale)."""
    from real_data.train import read_checkpoint

    for job in jobs_of(cfg):
        for name in (job["name"], *job.get("students", ())):
            path = out / "checkpoints" / f"{name}.pt"
            if not path.exists():
                continue
            try:
                read_checkpoint(path)
            except ValueError as err:
                kept = _set_aside(path, ".damaged")
                record = out / "jobs" / f"{job['name']}.json"
                if record.exists():
                    _set_aside(record, ".stale")
                log(f"  {err}; kept as {kept.name}, training {job['name']} again")


def _set_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` to the first free ``path + suffix`` (then ``-2``, ``-3``, ...): nothing is overwritten."""
    target, n = path.with_name(path.name + suffix), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}-{n}")
    path.rename(target)
    return target


def run(cfg: ReproduceConfig, data_path, out: Path, device: str = "cpu", cache_dir=None, progress: bool = False,
        log=print, where=None) -> dict:
    """Run (or continue, from the records and checkpoints in ``out``) the whole experiment; return
    the results. Each job of :func:`jobs_of` runs through :mod:`theory_sims.cluster` (``where``,
    default in this process); the test accuracies are computed here from the finished checkpoints."""
    import torch

    from real_data import train as rt
    from theory_sims import cluster
    from theory_sims.stats import ensemble_output

    timing: dict[str, float] = {}
    t_all = time.perf_counter()
    run_ = _Run(cfg, data_path, cache_dir, device)
    dd = run_.dd
    timing["data"] = time.perf_counter() - t_all
    log(f"{run_.images.source}: {len(dd.y_train)} train / {len(dd.y_test)} test images, {dd.num_classes} classes, "
        f"on {device}")
    out = Path(out)
    _retrain_damaged(cfg, out, log)
    specs = jobs_of(cfg)
    # a record depends on the settings, the device and the job, not on where the folders are
    jobs = [cluster.Job(j["name"], train_job, (cfg, str(data_path), cache_dir, device, str(out), j["name"]),
                        after=tuple(dict.fromkeys(n for n, _ in j["teachers"])), gpu=device.startswith("cuda"),
                        ident=(cfg, device, j["name"]))
            for j in specs]
    where = where or cluster.Where()
    serial = where.mode == "serial"
    if serial and progress:  # per-epoch bars inside the jobs, as before
        jobs = [dataclasses.replace(j, args=j.args + (True,)) for j in jobs]
    kept = []
    records = cluster.run_jobs(jobs, out / "jobs", where, log=log, progress=progress and not serial, kept=kept,
                               on_done=lambda key, rec: f"  {key}: {rec['epochs_done']} epochs, {rec['wall_s']:.1f} s")
    for j in specs:
        timing[j["name"]] = records[j["name"]]["wall_s"]

    ckpt = out / "checkpoints"

    def acc(logits, y=dd.y_test):
        return (logits.argmax(-1) == y).float().mean(-1).cpu().numpy()

    def ens_acc(logits):
        return float(acc(ensemble_output(logits, cfg.spec.ensemble)))

    def logits_of(names):
        """Test and (un-augmented) training logits of the named checkpoints' models, each loaded once."""
        models = [m for n in names for m in run_.trained(ckpt, n)]
        return rt.predict(models, dd.x_test), rt.predict(models, dd.x_train)

    def train_acc(z):  # on the un-augmented training images: do the models fit them?
        return acc(z, dd.y_train).tolist()

    results: dict = {"jobs": records, "num_classes": run_.k}
    S, K = cfg.seeds, cfg.students
    single_logits, single_train = logits_of(["singles-stacked"] if cfg.stack else [f"single-{s}" for s in range(S)])
    individual = acc(single_logits)
    for s in range(S):
        log(f"  single {s}: {100 * float(individual[s]):.2f}%")
    results["individual"] = {"test_acc": individual.tolist(), "mean": float(individual.mean()),
                             "std": float(individual.std(ddof=1)) if S > 1 else 0.0,
                             "train_acc": train_acc(single_train)}
    results["ensemble"] = {"test_acc": ens_acc(single_logits), "members": S}

    kd_logits, kd_train = logits_of([f"kd-{s}" for s in range(K)])
    kd_acc = acc(kd_logits)
    results["kd"] = {"test_acc": float(kd_acc.mean()), "per_model": kd_acc.tolist(), "train_acc": train_acc(kd_train)}
    results["kd_ensemble"] = {"test_acc": ens_acc(kd_logits), "members": K}
    log(f"  KD: {100 * kd_acc.mean():.2f}%, ensemble of KD students {100 * results['kd_ensemble']['test_acc']:.2f}%")

    self_logits, self_train = logits_of([f"self_kd-{s}" for s in range(K)])
    self_acc = acc(self_logits)
    results["self_kd"] = {"test_acc": float(self_acc.mean()), "per_model": self_acc.tolist(),
                          "train_acc": train_acc(self_train)}
    if K > 1:  # the students' seed-to-seed spread
        for key, accs in (("kd", kd_acc), ("self_kd", self_acc)):
            results[key]["std"] = float(accs.std(ddof=1))
    log(f"  self-KD: {100 * self_acc.mean():.2f}%")

    avg_logits, avg_train = (z.mean(0) for z in logits_of(["average"]))
    results["average"] = {"test_acc": float(acc(avg_logits)), "members": cfg.average_members,
                          "train_acc": train_acc(avg_train[None])}
    log(f"  training the average: {100 * results['average']['test_acc']:.2f}%")

    _beyond_accuracy(results, cfg, dd.y_test, {"individual": single_logits, "kd": kd_logits, "self_kd": self_logits,
                                                "average": avg_logits[None]})
    timing["total"] = time.perf_counter() - t_all
    timing["earlier_processes"] = cluster.earlier_work(out / "jobs", kept)
    results["timing_s"] = timing
    if not cfg.stack:  # what distillation costs: the distill job against training its students alone
        def per_student_vs_single(key):
            single = sum(records[f"single-{s}"].get(key, 0.0) for s in range(S)) / S
            return records["distill"].get(key, 0.0) / (2 * K * single) if single > 0 else None

        timing["distill_per_student_vs_single"] = per_student_vs_single("wall_s")
        timing["distill_per_student_vs_single_cpu"] = per_student_vs_single("cpu_s")
        cpu = timing["distill_per_student_vs_single_cpu"]
        log(f"  distillation: {2 * K} students in {records['distill']['wall_s']:.1f} s; per student, against a "
            f"single model: {timing['distill_per_student_vs_single']:.2f}x its wall time (moves with the machine's "
            f"load)" + (f", {cpu:.2f}x its CPU time" if cpu is not None and device == "cpu" else ""))
    first = records["singles-stacked" if cfg.stack else "single-0"]
    results["throughput"] = {"images_per_s": first.get("images_per_s"), "models_per_image": S if cfg.stack else 1,
                             "device": _device_name(device)}
    return results


def _beyond_accuracy(results: dict, cfg: ReproduceConfig, y, logits: dict) -> None:
    """Beside each row's accuracy: its NLL and expected calibration error (means over the models of a
    stack; ensembles as the run builds them, ``--ensemble``); over the single models, how often two
    of them disagree and the ensemble's accuracy at every size from 1 to --seeds (mean over subsets)."""
    from scipy.special import softmax

    from theory_sims import ensembles as en
    from theory_sims.stats import ensemble_output

    y = y.cpu().numpy()
    z = {key: v.float().cpu().numpy() for key, v in logits.items()}
    how = cfg.spec.ensemble
    stacks = {"individual": z["individual"], "kd": z["kd"], "self_kd": z["self_kd"], "average": z["average"],
              "ensemble": ensemble_output(z["individual"], how)[None], "kd_ensemble": ensemble_output(z["kd"], how)[None]}
    for key, stack in stacks.items():
        results[key]["nll"] = float(np.mean([en.nll(m, y) for m in stack]))
        results[key]["ece"] = float(np.mean([en.ece(m, y) for m in stack]))
    S = z["individual"].shape[0]
    if S > 1:
        results["disagreement"] = en.mean_off_diagonal(en.pairwise_disagreement(z["individual"]))
        # the subsets' mean of the logits, or of the probabilities (whose argmax is the softmax ensemble's)
        members = z["individual"] if how == "logits" else softmax(z["individual"], axis=-1)
        results["ensemble_size"] = en.size_curve(members, y, list(range(1, S + 1)), seed=cfg.seed)


def format_beyond(results: dict) -> str:
    """Two lines: how often two single models disagree and the ensemble's accuracy by its size."""
    if "ensemble_size" not in results:
        return ""
    curve = ", ".join(f"{r['size']}: {100 * r['acc']:.2f}" for r in results["ensemble_size"])
    return (f"two single models predict differently on {100 * results['disagreement']:.2f}% of the test images "
            f"(mean over pairs)\nensemble accuracy % by members (mean over subsets of the seeds): {curve}")


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


ROWS = [("single model", "individual"), ("ensemble", "ensemble"), ("knowledge distillation", "kd"),
        ("self-distillation", "self_kd"), ("training the average", "average"),
        ("ensemble of KD students", "kd_ensemble")]


def table_rows(results: dict, dataset: str, mode: str = "full") -> list[dict]:
    """The table's rows; the paper column holds the WRN-28-10 numbers for ``full`` and the paper's
    random-feature (NTK) numbers for the other modes."""
    paper = PAPER if mode == "full" else PAPER_RANDOM_FEATURES
    fast = FAST_REPLICATION if mode == "full" else {}
    rows = []
    for name, key in ROWS:
        r = results[key]
        acc = r["mean"] if key == "individual" else r["test_acc"]
        train = r.get("train_acc")
        rows.append({"row": name, "key": key, "test_acc": 100 * acc,
                     "std": 100 * r["std"] if key in ("individual", "kd", "self_kd") and "std" in r else None,
                     "train_acc": None if train is None else 100 * sum(train) / len(train),
                     "gain_over_single": 100 * (acc - results["individual"]["mean"]),
                     "nll": r.get("nll"), "ece": None if r.get("ece") is None else 100 * r["ece"],
                     "paper": paper[dataset].get(key),
                     "fast_replication": fast.get(dataset, {}).get(key)})
    return rows


def format_table(rows: list[dict], mode: str = "full") -> str:
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    paper = "paper WRN-28-10" if mode == "full" else "paper RF (NTK)"
    head = (f"{'':26} {'test acc %':>14} {'vs single':>9} {'train %':>8} {'NLL':>6} {'ECE %':>6}   {paper:>15} "
            f"{'fast replication':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = f"{r['test_acc']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "")
        nll = "" if r.get("nll") is None else f"{r['nll']:.3f}"
        lines.append(f"{r['row']:26} {acc:>14} {r['gain_over_single']:+9.2f} {fmt(r.get('train_acc')):>8} "
                     f"{nll:>6} {fmt(r.get('ece')):>6}   {fmt(r['paper']):>15} {fmt(r['fast_replication']):>16}")
    if any(r["paper"] is not None or r["fast_replication"] is not None for r in rows):
        lines.append(f"({paper} and fast replication: published full-size references for comparison, "
                     f"not numbers of this run)")
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    """'1 student', '5 students'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


# The run's figure and its one-line caption (report.md).
REPRODUCE_FIGURES = {
    "accuracy.png": "every row's test accuracy (dots: its models; chance drawn), and its gain over the single "
                    "models beside their seed-to-seed spread",
}


def accuracy_figure(rows: list[dict], results: dict, title: str):
    """Left: every row's test accuracy, each model as a dot where a row has several, with chance
    level drawn, so a run that barely learned reads as one. Right: each row's gain over the single
    models against the single models' seed-to-seed spread (shaded: ± 1 std of one model), so a gain
    within seed noise reads as noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    names = [r["row"] for r in rows]
    y = range(len(rows))
    ax.barh(y, [r["test_acc"] for r in rows], color="tab:blue", alpha=0.7)
    per_model = {"individual": results["individual"]["test_acc"], "kd": results["kd"].get("per_model", []),
                 "self_kd": results["self_kd"].get("per_model", [])}
    for i, r in enumerate(rows):
        accs = per_model.get(r["key"], [])
        if len(accs) > 1:
            ax.plot([100 * a for a in accs], [i] * len(accs), "o", ms=3, color="black")
    chance = 100 / results["num_classes"] if "num_classes" in results else None
    if chance is not None:
        ax.axvline(chance, color="tab:red", ls="--", lw=1, label=f"chance ({chance:.0f}%)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)  # clear of the bars
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="test accuracy % (dots: the row's models)", ylabel="")
    spread = rows[0]["std"] or 0.0
    gx.axvspan(-spread, spread, color="grey", alpha=0.2, lw=0, label=f"± 1 std of a single model ({spread:.2f})")
    gains = [r["gain_over_single"] for r in rows]
    gx.barh(y, gains, color=["tab:green" if g >= 0 else "tab:red" for g in gains])  # a loss is not a gain
    gx.axvline(0, color="grey", lw=0.8)
    gx.set(xlabel="minus the single models' mean (percentage points)")
    if chance is not None and rows[0]["test_acc"] < chance + 5:
        gx.set_title("the single models are within 5 points of chance: these gains mean nothing",
                     fontsize=9, color="tab:red")
    gx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- CLI


def _help_defaults(part) -> SimpleNamespace:
    """Each field's default as ``--help`` shows it, read from :data:`PRESETS`: its value in a run
    without --preset and, where another preset sets it otherwise, that preset's (``part`` picks the
    config or its training spec out of a configured run)."""
    runs = {name: part(configure(name)) for name in PRESETS}
    base = runs[DEFAULT_PRESET]
    shown = {}
    for f in dataclasses.fields(base):
        here = getattr(base, f.name)
        others = [f"{name} {getattr(r, f.name)}" for name, r in runs.items() if getattr(r, f.name) != here]
        shown[f.name] = f"{here}" + (f"; --preset {', '.join(others)}" if others else "")
    return SimpleNamespace(**shown)


def read_saved(where, flag: str) -> tuple[ReproduceConfig, dict]:
    """The config of the run in folder ``where`` and what its config.json holds (its data path and
    device), for ``--resume`` and ``--config`` (which also takes the config.json itself); a ValueError
    naming ``flag`` for a folder without one, another command's run, or a run of an earlier version."""
    where = Path(where)
    saved = where if flag == "--config" and where.is_file() else where / "config.json"
    if not saved.is_file():
        raise ValueError(f"{flag} must be a run folder holding config.json, got {where}")
    try:
        saved_run = json.loads(saved.read_text())
        earlier = "ensemble" not in saved_run["experiment"]["spec"]  # before the distill job existed
        cfg = ReproduceConfig.from_dict(saved_run["experiment"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{flag} {where}: not a real_data.reproduce run folder ({type(err).__name__}: "
                         f"{err})") from None
    if earlier:
        raise ValueError(f"{flag} {where}: this run was started by an earlier version (one job per KD "
                         f"student, softmax ensembles) that this one cannot continue; its files are kept "
                         f"as they are: start a new run")
    return cfg, saved_run


def build_parser() -> Parser:
    p = Parser(prog="python -m real_data.reproduce", description=__doc__)
    paper = configure("paper")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"starting point for the other flags (default: {DEFAULT_PRESET}, the GPU recipe; smoke: the "
                        f"CPU end-to-end test, a tiny net; cpu: the paper's pattern on 2 CPU cores, README.md gives "
                        f"its time; paper: WRN-{paper.depth}-{paper.width:g}, {paper.spec.epochs} epochs)")
    p.add_argument("--config", default=None, metavar="RUN_FOLDER",
                   help="start a new run from the saved config of an earlier reproduce run instead of a preset: "
                        "RUN_FOLDER is its folder or its config.json; its data path and device too, unless --data or "
                        "--device is given; experiment and training flags given beside it override its settings (the "
                        "same flags re-create the run: its results.json equals the original's but for timings)")
    p.add_argument("--data", default=None,
                   help=f"CIFAR archive, extracted folder or image-folder tree/.tar.gz (default: ${ENV_VAR})")
    p.add_argument("--cache-dir", default=None, help="where decoded images are cached as .npz (default: no cache)")
    p.add_argument("--out", default=None, help="run folder (default: runs/reproduce-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_FOLDER",
                   help="continue the run in this folder with its saved config and data path (experiment and "
                        "training flags, --preset and --out are refused with it): finished jobs (RUN/jobs/*.json) are kept, a job cut short resumes from its "
                        "last epoch's checkpoint; a checkpoint that no longer loads is named, kept as NAME.pt.damaged "
                        "and its job trained again")
    p.add_argument("--device", default=None, help="'cpu' or 'cuda' (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars are drawn only on a terminal; elsewhere, e.g. in a log, one "
                        "plain line per finished job)")
    cluster.add_flags(p, default="serial")
    shown = f"defaults: --preset {DEFAULT_PRESET}'s, which a run without --preset uses; after ';' other presets' values"
    e = p.add_argument_group(f"experiment ({shown})")
    exp_flags = add_config_flags(e, ReproduceConfig, skip=("spec",), defaults=_help_defaults(lambda c: c))
    t = p.add_argument_group(f"training of every job ({shown})")
    spec_flags = add_config_flags(t, TrainSpec, defaults=_help_defaults(lambda c: c.spec))
    p.set_defaults(_exp=exp_flags, _spec=spec_flags)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    from theory_sims.results import (command_line, refuse_another_run, save_figure, start_run, write_csv, write_json,
                                     write_report)

    try:
        start, saved_data, saved_device = None, None, None
        if args.config is not None:
            if args.resume is not None or args.preset is not None:
                other = f"--resume {args.resume}" if args.resume is not None else f"--preset {args.preset}"
                raise ValueError(f"--config {args.config} and {other}: give one starting point")
            start, saved_start = read_saved(args.config, "--config")
            saved_data, saved_device = saved_start.get("data"), saved_start.get("device")
            if args.device is None and saved_device == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"--config {args.config}: the run ran on cuda, which torch does not see on this "
                                 "machine; give --device cpu to run it here")
        if args.device is not None:  # an empty --device is refused, not read as not given
            try:
                check_choice("device", args.device, ("cpu", "cuda"))
            except ValueError as err:  # "device must be one of ...": the line names the flag typed
                raise ValueError(as_flag(str(err), names=["device"])) from None
        device = (args.device if args.device is not None
                  else saved_device or ("cuda" if torch.cuda.is_available() else "cpu"))
        check_choice("device", device, ("cpu", "cuda"))  # a saved run's (--config)
        require_cuda(device)
        if args.resume is not None:
            # --resume continues the saved run as it was: a flag it would have to ignore is refused
            ignored = ["--" + name.replace("_", "-") for name in (*args._exp, *args._spec)
                       if getattr(args, name) is not None]
            ignored += [flag for flag, value in (("--preset", args.preset), ("--out", args.out)) if value is not None]
            if ignored:
                raise ValueError(f"--resume continues the run with its saved config; {', '.join(ignored)} "
                                 f"cannot change it (start a new run with --out to use other values)")
            out = Path(args.resume)
            cfg, saved_run = read_saved(out, "--resume")
            saved_data = saved_run.get("data")
        else:
            exp = given(args, args._exp)
            if "seeds" in exp and "students" not in exp:  # at most as many students as seeds
                preset = PRESETS[args.preset or DEFAULT_PRESET]
                students = start.students if start is not None else preset.get("students", ReproduceConfig.students)
                exp["students"] = min(students, exp["seeds"])
            try:
                if start is None:
                    cfg = configure(args.preset or DEFAULT_PRESET, **exp, spec=given(args, args._spec))
                else:  # the earlier run's config, the flags given over it
                    spec = dataclasses.replace(start.spec, **given(args, args._spec))
                    cfg = dataclasses.replace(start, **exp, spec=spec)
            except ValueError as err:
                raise ValueError(as_flag(str(err), names=[*args._exp, *args._spec])) from None
            refuse_inert(args, cfg, INERT_FLAGS)
        where = cluster.where(args)
        data_path = args.data or saved_data or os.environ.get(ENV_VAR)
        if data_path is None:
            raise ValueError(f"--data must name the CIFAR data (or set ${ENV_VAR})")
        if not Path(data_path).exists():
            raise ValueError(f"--data: no such file or folder: {data_path}")
        if args.resume is None:
            refuse_another_run(args.out, same_flags=False)  # before the data is read
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    try:  # the data first: a run folder is made only for inputs that load
        _Run(cfg, data_path, args.cache_dir, device)
        if args.resume is None:
            out = start_run(args.out, None, "reproduce", {"experiment": cfg.to_dict(),
                                                          "data": str(Path(data_path).resolve()), "device": device})
    except DataError as err:
        fail(parser.prog, as_flag(str(err), names=["cache_dir"]))
    except ValueError as err:
        parser.error(str(err))
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    try:
        results = run(cfg, data_path, out, device, args.cache_dir, progress=progress_bars(args.quiet), log=log,
                      where=where)
    except (DataError, ValueError) as err:
        fail(parser.prog, str(err))
    rows = table_rows(results, cfg.dataset, cfg.mode)
    write_json(out / "results.json", results)
    write_csv(out / "table.csv", rows)
    n_train = cfg.n_train or "all"
    title = (f"{cfg.dataset} ({results.get('num_classes', '?')} classes), {cfg.model} net width {cfg.width:g}, "
             f"{cfg.mode}; {plural(cfg.seeds, 'seed')}, {plural(cfg.students, 'student')}; {n_train} training "
             f"images, {plural(cfg.spec.epochs, 'epoch')}")
    save_figure(accuracy_figure(rows, results, title), out / "accuracy.png")
    print(format_table(rows, cfg.mode))
    beyond = format_beyond(results)
    if beyond:
        print(beyond)
    from theory_sims.cluster import format_total

    total = format_total(results["timing_s"], on=" on " + results["throughput"]["device"])
    write_report(out, f"reproduce: ensemble, KD, self-KD and training the average on {title}",
                 command_line(parser.prog, argv), [("The table", format_table(rows, cfg.mode)),
                                                   ("Beyond accuracy", beyond), ("Time", total)], REPRODUCE_FIGURES)
    print(f"{total}; results in {out}, on one page in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
