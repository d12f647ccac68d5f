"""Hostile input, kept as a test: hundreds of bad inputs over every command line and the public API.

Each case is classified as

* ``clean``: a command exits with status 2 and one line on stderr that names the flag typed, and
  nothing is written (no run folder, no file: the whole scratch folder is unchanged); an API call
  raises ValueError or TypeError whose message names the argument;
* ``traceback``: any other exception or exit status, a stderr of several lines, or a refusal that
  does not name what was wrong (the detail says which);
* ``silent``: the call succeeds although the input is bad.

Only inputs that must be refused before any training starts are tried; each command's expensive
entry is replaced by a sentinel (:class:`Silent`) so that a bad input wrongly accepted is
classified ``silent`` at once instead of training. Run with ``-s`` to see the counts.

Known defects are marked ``xfail(strict=True)`` in :data:`DEFECTS` (the code is not changed here).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest


class Silent(BaseException):
    """Raised by a guarded entry point: the bad input was accepted. A BaseException so that no
    ``except Exception`` on the way (gpu_check collects its checks' errors) swallows it."""


def _silent(*args, **kwargs):
    raise Silent("SILENT")


# --------------------------------------------------------------------------- command lines

MODULES = {
    "view_learning": "theory_sims.view_learning",
    "sweep": "theory_sims.sweep",
    "search": "theory_sims.search",
    "ensemble_size": "theory_sims.ensemble_size",
    "gaussian_negative": "theory_sims.gaussian_negative",
    "cluster": "theory_sims.cluster",
    "generate": "multiview.generate",
    "reproduce": "real_data.reproduce",
    "visualize": "real_data.visualize",
    "gpu_check": "real_data.gpu_check",
}

# What each command would do first with input it accepted: replaced by the sentinel.
GUARDS = {
    "view_learning": [("theory_sims.view_learning", "run")],
    "sweep": [("theory_sims.sweep", "run")],
    "search": [("theory_sims.search", "open_study"), ("theory_sims.search", "search")],
    "ensemble_size": [("theory_sims.view_learning", "make_data")],
    "gaussian_negative": [("theory_sims.gaussian_negative", "run")],
    "cluster": [],
    "generate": [("multiview.multiview", "MultiViewDistribution.sample"), ("multiview.gaussian", "GaussianTask.sample")],
    "reproduce": [("real_data.reproduce", "_Run"), ("real_data.reproduce", "run")],
    "visualize": [("real_data.data", "load")],
    "gpu_check": [("real_data.gpu_check", n) for n in ("check_theory", "check_fast_net", "check_reproduce", "check_wrn")],
}

# Commands that take --out (a folder; generate's is a file); it is always given, under the scratch folder.
OUT = {"view_learning": "{out}", "sweep": "{out}", "search": "{out}", "ensemble_size": "{out}",
       "gaussian_negative": "{out}", "reproduce": "{out}", "visualize": "{out}", "gpu_check": "{out}",
       "generate": "{out}.npz"}
# Arguments a command needs to reach its checks (reproduce's data, visualize's checkpoint).
BASE = {"reproduce": ["--data", "{data}"], "visualize": ["--checkpoint", "{ckpt}", "--data", "{data}"],
        "gpu_check": ["--device", "cpu", "--tiny", "--only", "theory"]}


@dataclasses.dataclass(frozen=True)
class CliCase:
    cli: str
    argv: tuple  # the bad part (and the flags that set the mode it is bad in)
    names: tuple  # the stderr line must name one of these
    out: bool = True  # pass --out under the scratch folder
    base: bool = True  # pass BASE[cli]

    @property
    def id(self) -> str:
        shown = " ".join(repr(a) if a == "" or " " in a else a for a in self.argv)
        return f"{self.cli}: {shown}"


@dataclasses.dataclass(frozen=True)
class ApiCase:
    id: str
    call: object  # callable(ctx) -> anything
    names: tuple  # the message must name one of these


CASES: list = []


def cli(name, *argv, names=None, out=True, base=True):
    if names is None:
        names = (next(a for a in argv if a.startswith("--")),)
    elif isinstance(names, str):
        names = (names,)
    CASES.append(CliCase(name, tuple(argv), names, out, base))


def api(case_id, call, names):
    CASES.append(ApiCase(case_id, call, (names,) if isinstance(names, str) else tuple(names)))


# --- theory_sims.view_learning (its flags are those of sweep and search too)

# flag -> (bad values, flags that make it act); ints take "abc", "1.5", "" and their out-of-range values.
VL_INTS = {
    "--n-train": ["0", "5"], "--n-test": ["0"], "--seeds": ["1", "0"], "--students": ["0", "11"], "--seed": ["-1"],
    "--k": ["1"], "--views": ["0"], "--d": ["0", "10"], "--patches": ["0"], "--feature-patches": ["0"],
    "--other-features": ["-1", "1000"], "--m": ["0"], "--q": ["0"], "--steps": ["0", "-3"], "--kd-steps": ["0"],
    "--rf-steps": ["0"], "--extra-steps": ["-1"], "--plateau-window": ["0"], "--kd-plateau-window": ["0"],
    "--ntk-steps": ["0"],
}
VL_FLOATS = {
    "--augment-rate": ["0", "1", "-0.5"], "--missing": ["0", "1.5", "-0.1"], "--c-max": ["0.5"], "--rho": ["-1", "0.9"],
    "--other-weight-multi": ["0.5", "-1"], "--other-weight-single": ["2"], "--feature-noise": ["-1"],
    "--noise-std": ["-1"], "--varrho": ["0", "-1"], "--sigma0": ["0"], "--lr": ["0", "-1"], "--fit-multiple": ["0.5"],
    "--loss-target": ["0"], "--plateau": ["1", "-0.1"], "--max-step": ["-1"], "--kd-temperature": ["0", "-1"],
    "--kd-label-weight": ["2", "-1"], "--kd-weight": ["-1"], "--kd-teacher-scale": ["0"], "--kd-lr": ["0"],
    "--kd-fit-multiple": ["0.5"], "--kd-loss-target": ["0"], "--kd-plateau": ["1"], "--kd-max-step": ["-1"],
    "--rf-lr": ["0"], "--ntk-lr": ["0"],
}
VL_MODE = {"--augment-rate": ["--augment", "drop_patches"], "--extra-steps": ["--stop", "fit"],
           "--plateau-window": ["--plateau", "0.1"], "--kd-weight": ["--kd-loss", "kd_paper"],
           "--ntk-steps": ["--ntk"], "--ntk-lr": ["--ntk"]}
VL_CHOICES = ["--preset", "--backend", "--device", "--products", "--augment", "--stop", "--kd-stop", "--kd-loss",
              "--missing-mode", "--basis"]
# (flags, the flag the error must name): a flag that would do nothing in the mode the others set.
VL_INERT = [
    (["--extra-steps", "5"], "--extra-steps"),
    (["--kd-weight", "2"], "--kd-weight"),
    (["--stop", "steps", "--fit-multiple", "2"], "--fit-multiple"),
    (["--stop", "fit", "--loss-target", "0.1"], "--loss-target"),
    (["--stop", "steps", "--plateau", "0.1"], "--plateau"),
    (["--plateau-window", "20"], "--plateau-window"),
    (["--kd-stop", "steps", "--kd-fit-multiple", "3"], "--kd-fit-multiple"),
    (["--kd-stop", "steps", "--kd-plateau", "0.1"], "--kd-plateau"),
    (["--kd-loss", "kd_paper", "--kd-label-weight", "0.5"], "--kd-label-weight"),
    (["--no-random-features", "--rf-lr", "5"], "--rf-lr"),
    (["--no-random-features", "--rf-steps", "5"], "--rf-steps"),
    (["--ntk-lr", "5"], "--ntk-lr"),
    (["--ntk-steps", "5"], "--ntk-steps"),
    (["--augment-rate", "0.3"], "--augment-rate"),
    (["--augment", "drop_view", "--augment-rate", "0.3"], "--augment-rate"),
]
# Files and folders that are not what --config / --resume want.
NOT_A_RUN = ["{missing}", "{emptydir}", "{textfile}", "{badjson}", "{listjson}", "{otherrun}"]

for flag, values in VL_INTS.items():
    for v in ["abc", "1.5", "", *values]:
        cli("view_learning", *VL_MODE.get(flag, []), flag, v, names=flag)
for flag, values in VL_FLOATS.items():
    for v in ["abc", "nan", "inf", *values]:
        cli("view_learning", *VL_MODE.get(flag, []), flag, v, names=flag)
for flag in VL_CHOICES:
    for v in ["bogus", ""]:
        cli("view_learning", flag, v, names=flag)
for argv, flag in VL_INERT:
    cli("view_learning", *argv, names=flag)
for where in NOT_A_RUN:
    cli("view_learning", "--config", where)
    cli("view_learning", "--resume", where, out=False)
cli("view_learning", "--config", "{vlrun}", "--preset", "large", names=("--config", "--preset"))
cli("view_learning", "--resume", "{vlrun}", "--seeds", "3", out=False, names="--resume")
cli("view_learning", "--resume", "{vlrun}", "--out", "{out}", out=False, names=("--out", "--resume"))
cli("view_learning", "--out", "{vlrun}", out=False)
cli("view_learning", "--out", "{textfile}/sub", out=False)
cli("view_learning", "--k", "40", "--views", "20", names=("--d", "--k", "--views"))
cli("view_learning", "--seeds", "3", "--students", "4", names="--students")
cli("view_learning", "--k", "20", "--n-train", "10", names="--n-train")
cli("view_learning", "--missing-mode", "independent", "--missing", "1", names="--missing")
cli("view_learning", "--stop", "steps", "--seeds", "2", "--students", "3", names="--students")
cli("view_learning", "--bogus-flag", names="--bogus-flag")
cli("view_learning", "stray", names="stray")
cli("view_learning", "--seeds", names="--seeds")  # no value

# --- theory_sims.sweep
for argv in (["--n-train", "abc"], ["--seeds", "1"], ["--missing", "nan"], ["--kd-lr", "inf"], ["--stop", "bogus"],
             ["--extra-steps", "3"], ["--config", "{badjson}"], ["--config", "{otherrun}"], ["--bogus-flag"]):
    cli("sweep", *argv, names=argv[0])
for where in ("{missing}", "{emptydir}", "{textfile}", "{otherrun}"):
    cli("sweep", "--resume", where, out=False)
cli("sweep", "--resume", "{vlrun}", out=False, names="--resume")  # a view_learning run, not a sweep
for spec in ("nonsense", "train.lr=", "=1,2", "bogus.lr=1,2", "train.bogus=1,2", "train.lr=abc,1", "train.lr=-1,2",
             "train.lr=nan", "data.k=1,2", "n_train=abc", "learner.m=0,1", "bogus=1,2", "train.fit_multiple=2,3"):
    cli("sweep", "--vary", spec, *(["--stop", "steps"] if "fit_multiple" in spec else []), names="--vary")
cli("sweep", "--vary", "train.lr=1,2", "--vary", "train.lr=3,4", names="--vary")
cli("sweep", "--vary", "train.lr=1,2", "--vary", "learner.m=1,2,3", names="--vary")
cli("sweep", "--grid", "--vary", "train.lr=1,2", names="--grid")
cli("sweep", "--grid", names="--grid")
for v in ("1,2", "abc", "3,3", "", "-2,3", "2.5"):
    cli("sweep", "--scale-k", v)
cli("sweep", "--scale-k", "2,3", "--vary", "train.lr=1,2", names="--scale-k")
cli("sweep", "--k-rule", "race")
cli("sweep", "--scale-k", "2,3", "--k-rule", "bogus", names="--k-rule")
for v in ("-1", "a,b", "", "0,-3", "1.5"):
    cli("sweep", "--data-seeds", v)
for argv in (["--cluster", "bogus"], ["--cluster", "tcp://"], ["--cluster", ""], ["--workers", "0"],
             ["--workers", "abc"], ["--workers", "-2"]):
    cli("sweep", *argv, names=argv[0])
cli("sweep", "--cluster", "serial", "--workers", "2", names="--workers")

# --- theory_sims.search
for argv in (["--trials", "0"], ["--trials", "abc"], ["--trials", "-1"], ["--timeout-min", "0"],
             ["--timeout-min", "nan"], ["--timeout-min", "-5"], ["--timeout-min", "abc"], ["--timeout-min", "-inf"],
             ["--sampler-seed", "-1"], ["--sampler-seed", "abc"], ["--data-seeds", ""], ["--data-seeds", "-1"],
             ["--data-seeds", "a"], ["--data-seeds", "1,1"], ["--validate", ""], ["--validate", "x"],
             ["--validate", "-4"], ["--axes", "bogus"], ["--axes", ""], ["--axes", "data.d,data.d"],
             ["--axes", "data.d,bogus"], ["--warm-start", "{missing}"], ["--warm-start", "{emptydir}"],
             ["--warm-start", "{textfile}"], ["--warm-start", "{vlrun}"], ["--cluster", "bogus"], ["--workers", "0"],
             ["--workers", "2"], ["--n-train", "abc"], ["--seeds", "1"], ["--kd-plateau", "nan"],
             ["--config", "{textfile}"], ["--bogus-flag"]):
    cli("search", *argv, names=argv[0])
cli("search", "--validate", "0,100", names="--validate")  # 0 is one of the default --data-seeds
cli("search", "--data-seeds", "5,6", "--validate", "6", names="--validate")
for where in ("{missing}", "{emptydir}", "{otherrun}", "{vlrun}"):
    cli("search", "--resume", where, out=False)

# --- theory_sims.ensemble_size
for argv in (["--seeds", "1"], ["--seeds", "0"], ["--seeds", "abc"], ["--seeds", "-1"], ["--sizes", "0"],
             ["--sizes", "abc"], ["--sizes", ""], ["--sizes", "1,1"], ["--sizes", "200"], ["--sizes", "1,-2"],
             ["--subsets", "0"], ["--subsets", "abc"], ["--n-boot", "0"], ["--n-boot", "-1"], ["--n-boot", "1.5"],
             ["--seed", "-1"], ["--seed", "abc"], ["--views", "0"], ["--views", "abc"], ["--views", "1000"],
             ["--bogus-flag"]):
    cli("ensemble_size", *argv, names=argv[0])
cli("ensemble_size", "--seeds", "4", "--sizes", "2,5", names="--sizes")
for where in ("{missing}", "{emptydir}", "{textfile}", "{otherrun}", "{vlrun}"):
    cli("ensemble_size", "--resume", where, out=False)
cli("ensemble_size", "--out", "{vlrun}", out=False)

# --- theory_sims.gaussian_negative
for argv in (["--seeds", "0"], ["--seeds", "abc"], ["--n-train", "0"], ["--n-train", "abc"], ["--n-test", "0"],
             ["--dim", "0"], ["--dim", "abc"], ["--conv-patches", "0"], ["--k", "1"], ["--margin", "-1"],
             ["--margin", "nan"], ["--label-noise", "1.5"], ["--label-noise", "nan"], ["--label-noise", "-0.1"],
             ["--n-boot", "0"], ["--seed", "-1"], ["--width", "0"], ["--depth", "0"], ["--adam-lr", "0"],
             ["--adam-lr", "nan"], ["--max-steps", "0"], ["--learner", "bogus"], ["--backend", "bogus"],
             ["--device", "bogus"], ["--cluster", "bogus"], ["--workers", "0"], ["--multiview-results", "{missing}"],
             ["--multiview-results", "{textfile}"], ["--multiview-results", "{emptydir}"],
             ["--multiview-results", "{otherjson}"], ["--m", "3"], ["--steps", "10"], ["--bogus-flag"]):
    cli("gaussian_negative", *argv, names=argv[0])
for argv in (["--m", "0"], ["--q", "0"], ["--sigma0", "0"], ["--sigma0", "nan"], ["--lr", "inf"], ["--steps", "0"]):
    cli("gaussian_negative", "--learner", "theory", *argv, names=argv[0])
cli("gaussian_negative", "--learner", "theory", "--width", "8", names="--width")
cli("gaussian_negative", "--no-multiview", "--multiview-results", "{otherjson}",
    names=("--no-multiview", "--multiview-results"))
for where in ("{missing}", "{emptydir}", "{otherrun}"):
    cli("gaussian_negative", "--resume", where, out=False)

# --- theory_sims.cluster (it takes no flags)
cli("cluster", "--bogus-flag", out=False)
cli("cluster", "stray", names="stray", out=False)
cli("cluster", "--workers", "2", out=False)

# --- multiview.generate
for argv in (["--kind", "bogus"], ["--n", "0"], ["--n", "-1"], ["--n", "abc"], ["--n", "1.5"], ["--seed", "-1"],
             ["--seed", "abc"], ["--world-seed", "-1"], ["--k", "1"], ["--views", "0"], ["--patches", "0"],
             ["--feature-patches", "0"], ["--missing", "1.5"], ["--missing", "nan"], ["--missing-mode", "bogus"],
             ["--c-max", "0.5"], ["--rho", "0.9"], ["--other-weight-multi", "0.5"], ["--other-features", "-1"],
             ["--noise-std", "-1"], ["--noise-std", "inf"], ["--feature-noise", "nan"], ["--basis", "bogus"],
             ["--d", "5"], ["--teacher", "conv"], ["--n", "1000000000000"]):
    cli("generate", *argv, names=argv[0])
for argv in (["--views", "2"], ["--teacher", "bogus"], ["--input", "bogus"], ["--components", "0"],
             ["--separation", "-1"], ["--teacher-width", "0"], ["--teacher-depth", "0"], ["--sampling", "bogus"],
             ["--margin", "-1"], ["--margin", "nan"], ["--label-noise", "1.0"], ["--patch-dim", "0"],
             ["--patch-dim", "abc"]):
    cli("generate", "--kind", "gaussian", *argv, names=argv[0])
cli("generate", "--out", "{emptydir}", out=False)
cli("generate", "--out", "{textfile}", out=False)
cli("generate", "--out", "{textfile}/sub/data.npz", out=False)

# --- real_data.reproduce
for argv in (["--preset", "bogus"], ["--device", "tpu"], ["--device", ""], ["--dataset", "bogus"],
             ["--labels", "coarse"], ["--labels", "bogus"], ["--model", "bogus"], ["--mode", "bogus"],
             ["--depth", "10"], ["--dropout", "0.3"], ["--width", "0"], ["--width", "nan"], ["--width", "-1"],
             ["--seeds", "0"], ["--seeds", "abc"], ["--students", "0"], ["--average-members", "0"],
             ["--n-train", "-1"], ["--n-test", "-1"], ["--seed", "-1"], ["--epochs", "0"], ["--batch-size", "0"],
             ["--lr", "0"], ["--lr", "nan"], ["--momentum", "1"], ["--weight-decay", "-1"], ["--schedule", "bogus"],
             ["--label-smoothing", "1"], ["--crop-pad", "17"], ["--crop-pad", "-1"],
             ["--cutout", "33"], ["--kd-temperature", "0"], ["--kd-temperature", "inf"], ["--kd-alpha", "2"],
             ["--ensemble", "bogus"], ["--cluster", "bogus"], ["--workers", "0"], ["--bogus-flag"]):
    cli("reproduce", *argv, names=argv[0])
cli("reproduce", "--model", "wrn", "--depth", "7", names="--depth")
cli("reproduce", "--model", "wrn", "--width", "1.5", names="--width")
cli("reproduce", "--model", "wrn", "--dropout", "1.0", names="--dropout")
cli("reproduce", "--model", "wrn", "--stack", names="--stack")
cli("reproduce", "--seeds", "2", "--students", "3", names="--students")
cli("reproduce", "--schedule", "onecycle", "--warmup", "1.0", names="--warmup")
cli("reproduce", "--schedule", "step", "--warmup", "0.5", names="--warmup")
cli("reproduce", "--preset", "paper", "--warmup", "0.5", names="--warmup")
cli("reproduce", "--data", "{missing}", base=False)
cli("reproduce", "--data", "", base=False)
cli("reproduce", "--preset", "smoke", names="--data", base=False)  # no --data, no $CIFAR_DATA
cli("reproduce", "--out", "{vlrun}", out=False)
for where in ("{missing}", "{emptydir}", "{textfile}", "{otherrun}", "{vlrun}"):
    cli("reproduce", "--resume", where, out=False)
cli("reproduce", "--resume", "{emptydir}", "--seeds", "3", out=False, names="--seeds")
cli("reproduce", "--resume", "{emptydir}", "--out", "{out}", out=False, names="--out")

# --- real_data.visualize
for argv in (["--top", "0"], ["--top", "abc"], ["--n-test", "0"], ["--auto", "0"], ["--am-steps", "-1"],
             ["--seed", "-1"], ["--class", "class0"], ["--dataset", "bogus"], ["--layer", "nosuch"],
             ["--channels", "a,b"], ["--channels", ""], ["--compare", "{missing}"], ["--compare", "{textfile}"],
             ["--bogus-flag"]):
    cli("visualize", *argv, names=argv[0])
cli("visualize", "--class", "zebra", "--compare", "{ckpt}", names="--class")
cli("visualize", "--out", "{vlrun}", out=False)
cli("visualize", "--checkpoint", "{missing}", "--data", "{data}", base=False)
cli("visualize", "--checkpoint", "{textfile}", "--data", "{data}", base=False)
cli("visualize", "--checkpoint", "{emptydir}", "--data", "{data}", base=False)
cli("visualize", "--checkpoint", "{otherjson}", "--data", "{data}", base=False)
cli("visualize", "--checkpoint", "{ckpt}", "--data", "{missing}", names="--data", base=False)
cli("visualize", "--data", "{data}", names="--checkpoint", base=False)  # --checkpoint is required

# --- real_data.gpu_check
for argv in (["--only", "bogus"], ["--only", ""], ["--only", "theory,bogus"], ["--only", ","], ["--bogus-flag"]):
    cli("gpu_check", *argv, names=argv[0])
cli("gpu_check", "--only", "fast_net", names="--data")  # no --data, no $CIFAR_DATA
cli("gpu_check", "--only", "reproduce", names="--data")
cli("gpu_check", "--only", "fast_net", "--data", "{missing}", names="--data")
cli("gpu_check", "--device", "tpu", base=False)
cli("gpu_check", "--device", "", "--tiny", "--only", "theory", base=False)
cli("gpu_check", "--out", "{vlrun}", out=False)
cli("gpu_check", "--only", "theory", "--data", "{missing}", names="--data")
cli("gpu_check", "--only", "theory", "--cache-dir", "{emptydir}", names="--cache-dir")


# --------------------------------------------------------------------------- public API

def _mv(**kw):
    from multiview import MultiViewConfig

    return MultiViewConfig(**kw)


def _gauss(**kw):
    from multiview import GaussianConfig

    return GaussianConfig(**kw)


for field, v in [("k", 1), ("k", 2.5), ("k", "3"), ("k", True), ("views", 0), ("d", 0), ("d", 3),
                 ("feature_patches", 0), ("other_features", -1), ("other_features", 100), ("patches", 0),
                 ("missing", -0.1), ("missing", 1.5), ("missing", float("nan")), ("missing_mode", "x"),
                 ("c_max", 0.5), ("c_max", float("inf")), ("rho", -1.0), ("rho", 0.9), ("other_weight_multi", 0.5),
                 ("other_weight_single", 2.0), ("feature_noise", -1.0), ("noise_std", float("nan")),
                 ("noise_std", -1.0), ("basis", "x"), ("missing", None)]:
    api(f"MultiViewConfig({field}={v!r})", lambda ctx, f=field, v=v: _mv(**{f: v}), field)
for field, v in [("k", 1), ("patches", 0), ("patch_dim", 0), ("input", "x"), ("components", 0),
                 ("separation", -1.0), ("teacher", "x"), ("teacher_width", 0), ("teacher_depth", 0),
                 ("sampling", "x"), ("margin", -1.0), ("margin", float("nan")), ("balance", "yes"),
                 ("label_noise", 1.0), ("label_noise", -0.1), ("patch_dim", 1.5)]:
    api(f"GaussianConfig({field}={v!r})", lambda ctx, f=field, v=v: _gauss(**{f: v}), field)


def _mvd(seed=0, config="default"):
    from multiview import MultiViewConfig, MultiViewDistribution

    cfg = MultiViewConfig(k=3, d=20, patches=12) if config == "default" else config
    return MultiViewDistribution(cfg, seed=seed)


def _gtask(seed=0):
    from multiview import GaussianConfig, GaussianTask

    return GaussianTask(GaussianConfig(k=3, patches=2, patch_dim=4, teacher_width=4), seed=seed)


for v in (-1, "a", 1.5, [1, -2], True):
    api(f"MultiViewDistribution(cfg, seed={v!r})", lambda ctx, v=v: _mvd(seed=v), "seed")
api("MultiViewDistribution(config=dict)", lambda ctx: _mvd(config={"k": 3}), "config")
api("MultiViewDistribution(config=GaussianConfig)", lambda ctx: _mvd(config=_gauss()), "config")
for v in (0, -1, 1.5, "3", None):
    api(f"MultiViewDistribution.sample(n={v!r})", lambda ctx, v=v: _mvd().sample(v), "n")
api("MultiViewDistribution.sample(seed=-1)", lambda ctx: _mvd().sample(4, seed=-1), "seed")
api("MultiViewDistribution.sample(seed=0.5)", lambda ctx: _mvd().sample(4, seed=0.5), "seed")
api("GaussianTask(cfg, seed=-1)", lambda ctx: _gtask(seed=-1), "seed")
for v in (0, -1, 2.5):
    api(f"GaussianTask.sample(n={v!r})", lambda ctx, v=v: _gtask().sample(v), "n")
api("GaussianTask.sample(seed=-3)", lambda ctx: _gtask().sample(4, seed=-3), "seed")


def _load(ctx, key):
    import multiview

    return multiview.load(ctx[key])


for key in ("missing", "textfile", "emptydir", "otherjson", "npz_empty", "npz_partial"):
    api(f"multiview.load({key})", lambda ctx, key=key: _load(ctx, key), "{" + key + "}")


def _learner(**kw):
    from theory_sims.config import LearnerConfig

    return LearnerConfig(**kw)


def _train_cfg(**kw):
    from theory_sims.config import TrainConfig

    return TrainConfig(**kw)


for field, v in [("k", 1), ("m", 0), ("q", 0), ("varrho", 0.0), ("sigma0", -1.0), ("sigma0", float("nan")),
                 ("mode", "x"), ("m", 2.0)]:
    api(f"LearnerConfig({field}={v!r})", lambda ctx, f=field, v=v: _learner(**{f: v}), field)
for kw, name in [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"steps": -1}, "steps"), ({"stop": "x"}, "stop"),
                 ({"extra_steps": -1}, "extra_steps"), ({"batch_size": -1}, "batch_size"),
                 ({"momentum": 1.0}, "momentum"), ({"max_step": -1.0}, "max_step"), ({"loss": "x"}, "loss"),
                 ({"fit_multiple": 0.5}, "fit_multiple"), ({"loss_target": 0.0}, "loss_target"),
                 ({"plateau": 1.0}, "plateau"), ({"plateau_window": 0}, "plateau_window"),
                 ({"snapshots": (0.5,)}, "snapshots"), ({"temperature": 0.0}, "temperature"),
                 ({"label_weight": 2.0}, "label_weight"), ({"kd_weight": -1.0}, "kd_weight"),
                 ({"teacher_scale": 0.0}, "teacher_scale"), ({"group_size": 0}, "group_size"),
                 ({"backend": "x"}, "backend"), ({"device": "tpu"}, "device"), ({"dtype": "x"}, "dtype"),
                 ({"products": "x"}, "products"), ({"augment": "x"}, "augment"), ({"augment_rate": 0.0}, "augment_rate"),
                 ({"track_every": -1}, "track_every"), ({"corr_at": (-1,)}, "corr_at"),
                 ({"backend": "numba", "device": "cuda"}, "device"), ({"group_size": 2}, "group_size"),
                 ({"stop": "converge", "batch_size": 10}, "batch_size"), ({"steps": 1.5}, "steps"),
                 ({"loss": "kd_paper", "label_weight": 0.5}, "label_weight")]:
    api(f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in kw.items())})", lambda ctx, kw=kw: _train_cfg(**kw), name)


def _train(X=None, y=None, seeds=(0,), learner=None, cfg=None, teacher=None, probe=None):
    from theory_sims.config import LearnerConfig, TrainConfig
    from theory_sims.train import train

    X = np.random.default_rng(0).normal(size=(6, 2, 8)).astype(np.float32) if X is None else X
    y = np.array([0, 1, 2, 0, 1, 2]) if y is None else y
    learner = LearnerConfig(k=3, m=1) if learner is None else learner
    cfg = TrainConfig(steps=1, stop="steps") if cfg is None else cfg
    return train(X, y, seeds, learner, cfg, teacher=teacher, probe=probe)


def _kd_cfg():
    from theory_sims.config import TrainConfig

    return TrainConfig(steps=1, stop="steps", loss="kd")


for case_id, kw, name in [
    ("X 2-D", dict(X=np.zeros((6, 16), np.float32)), "X"),
    ("X empty", dict(X=np.zeros((0, 2, 8), np.float32), y=np.zeros(0, int)), "X"),
    ("X NaN", dict(X=np.full((6, 2, 8), np.nan, np.float32)), "X"),
    ("X inf", dict(X=np.full((6, 2, 8), np.inf, np.float32)), "X"),
    ("X strings", dict(X=np.full((6, 2, 8), "a")), "X"),
    ("y wrong length", dict(y=np.array([0, 1, 2])), "y"),
    ("y floats", dict(y=np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])), "y"),
    ("y out of range", dict(y=np.array([0, 1, 2, 0, 1, 7])), "y"),
    ("y negative", dict(y=np.array([0, 1, 2, 0, 1, -1])), "y"),
    ("y 2-D", dict(y=np.zeros((6, 1), int)), "y"),
    ("seeds negative", dict(seeds=[-1]), "seeds"),
    ("seeds string", dict(seeds="ab"), "seeds"),
    ("seeds empty", dict(seeds=[]), "seeds"),
    ("seeds float", dict(seeds=[1.5]), "seeds"),
    ("seeds int", dict(seeds=3), "seeds"),
    ("learner dict", dict(learner={"k": 3}), "learner"),
    ("cfg dict", dict(cfg={"steps": 1}), "cfg"),
    ("kd without teacher", dict(cfg="kd"), "teacher"),
    ("teacher wrong shape", dict(cfg="kd", teacher=np.zeros((5, 3))), "teacher"),
    ("teacher NaN", dict(cfg="kd", teacher=np.full((6, 3), np.nan)), "teacher"),
    ("teacher strings", dict(cfg="kd", teacher=np.full((6, 3), "a")), "teacher"),
    ("batch_size > n", dict(cfg="batch"), "batch_size"),
    ("probe wrong type", dict(probe="all"), "probe"),
]:
    def _call(ctx, kw=kw):
        kw = dict(kw)
        if kw.get("cfg") == "kd":
            kw["cfg"] = _kd_cfg()
        elif kw.get("cfg") == "batch":
            kw["cfg"] = _train_cfg(steps=1, stop="steps", batch_size=100)
        return _train(**kw)
    api(f"train({case_id})", _call, name)


def _configure(*args, **kw):
    from theory_sims.view_learning import configure

    return configure(*args, **kw)


for case_id, args, kw, name in [
    ("preset='bogus'", ("bogus",), {}, "preset"),
    ("n_train=5", (), {"n_train": 5}, "n_train"),
    ("n_train='abc'", (), {"n_train": "abc"}, "n_train"),
    ("seeds=1", (), {"seeds": 1}, "seeds"),
    ("students=11", (), {"students": 11}, "students"),
    ("seed=-1", (), {"seed": -1}, "seed"),
    ("n_test=0", (), {"n_test": 0}, "n_test"),
    ("data k=1", (), {"data": {"k": 1}}, "k"),
    ("data missing=0", (), {"data": {"missing": 0.0}}, "missing"),
    ("learner m=0", (), {"learner": {"m": 0}}, "m"),
    ("train lr=-1", (), {"train": {"lr": -1.0}}, "lr"),
    ("train steps=0", (), {"train": {"steps": 0}}, "steps"),
    ("distill loss='ce'", (), {"distill": {"loss": "ce"}}, "loss"),
    ("unknown key", (), {"bogus_key": 1}, "bogus_key"),
    ("unknown data field", (), {"data": {"bogus": 1}}, "bogus"),
    ("augment='x'", (), {"augment": "x"}, "augment"),
    ("augment_rate=2", (), {"augment": "drop_patches", "augment_rate": 2.0}, "augment_rate"),
]:
    api(f"view_learning.configure({case_id})", lambda ctx, a=args, k=kw: _configure(*a, **k), name)


def _stats(fn, *args, **kw):
    from theory_sims import stats

    return getattr(stats, fn)(*args, **kw)


_L = lambda: np.random.default_rng(0).normal(size=(3, 5, 4))  # noqa: E731
_Y = lambda: np.array([0, 1, 2, 3, 0])  # noqa: E731
for case_id, fn, args, kw, name in [
    ("ensemble_gain(2-D logits)", "ensemble_gain", (np.zeros((5, 4)), np.zeros(5, int)), {}, "logits"),
    ("ensemble_gain(y wrong shape)", "ensemble_gain", ("L", np.zeros(4, int)), {}, "y"),
    ("ensemble_gain(y 2-D)", "ensemble_gain", ("L", np.zeros((5, 1), int)), {}, "y"),
    ("ensemble_gain(no models)", "ensemble_gain", (np.zeros((0, 5, 4)), "Y"), {}, "logits"),
    ("ensemble_gain(no samples)", "ensemble_gain", (np.zeros((3, 0, 4)), np.zeros(0, int)), {}, "logits"),
    ("ensemble_gain(no classes)", "ensemble_gain", (np.zeros((3, 5, 0)), "Y"), {}, "logits"),
    ("ensemble_gain(empty list)", "ensemble_gain", ([], []), {}, "logits"),
    ("gain_interval(level=1)", "gain_interval", ("L", "Y"), {"level": 1.0}, "level"),
    ("gain_interval(level=nan)", "gain_interval", ("L", "Y"), {"level": float("nan")}, "level"),
    ("gain_interval(n_boot=0)", "gain_interval", ("L", "Y"), {"n_boot": 0}, "n_boot"),
    ("gain_interval(resample=('x',))", "gain_interval", ("L", "Y"), {"resample": ("x",)}, "resample"),
    ("gain_interval(2-D logits)", "gain_interval", (np.zeros((5, 4)), "Y"), {}, "logits"),
    ("gain_interval(no samples)", "gain_interval", (np.zeros((3, 0, 4)), np.zeros(0, int)), {}, "logits"),
    ("gain_interval(seed=-1)", "gain_interval", ("L", "Y"), {"seed": -1}, "seed"),
    ("ensemble_output(how='x')", "ensemble_output", ("L",), {"how": "x"}, "ensemble"),
]:
    def _call(ctx, fn=fn, args=args, kw=kw):
        real = [{"L": _L, "Y": _Y}[a]() if isinstance(a, str) else a for a in args]
        return _stats(fn, *real, **kw)
    api(f"stats.{case_id}", _call, name)


def _repro_cfg(**kw):
    from real_data.reproduce import ReproduceConfig

    return ReproduceConfig(**kw)


def _spec(**kw):
    from real_data.train import TrainSpec

    return TrainSpec(**kw)


for kw, name in [({"dataset": "x"}, "dataset"), ({"labels": "coarse"}, "labels"), ({"model": "x"}, "model"),
                 ({"mode": "x"}, "mode"), ({"width": 0.0}, "width"), ({"dropout": 1.0}, "dropout"),
                 ({"model": "wrn", "depth": 7}, "depth"), ({"model": "wrn", "width": 1.5}, "width"),
                 ({"seeds": 0}, "seeds"), ({"students": 0}, "students"), ({"seeds": 2, "students": 3}, "students"),
                 ({"average_members": 0}, "average_members"), ({"model": "wrn", "stack": True}, "stack"),
                 ({"n_train": -1}, "n_train"), ({"n_test": -1}, "n_test"), ({"seed": -1}, "seed"),
                 ({"spec": {"epochs": 1}}, "spec")]:
    api(f"ReproduceConfig({', '.join(f'{k}={v!r}' for k, v in kw.items())})", lambda ctx, kw=kw: _repro_cfg(**kw), name)
for kw, name in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"),
                 ({"momentum": 1.0}, "momentum"), ({"weight_decay": -1.0}, "weight_decay"),
                 ({"schedule": "x"}, "schedule"), ({"warmup": 1.0}, "warmup"), ({"label_smoothing": 1.0}, "label_smoothing"),
                 ({"crop_pad": 17}, "crop_pad"), ({"cutout": 33}, "cutout"), ({"kd_temperature": 0.0}, "kd_temperature"),
                 ({"kd_alpha": 2.0}, "kd_alpha"), ({"ensemble": "x"}, "ensemble"), ({"lr": float("nan")}, "lr")]:
    api(f"TrainSpec({', '.join(f'{k}={v!r}' for k, v in kw.items())})", lambda ctx, kw=kw: _spec(**kw), name)


def _repro_configure(*a, **kw):
    from real_data.reproduce import configure

    return configure(*a, **kw)


api("reproduce.configure(preset='bogus')", lambda ctx: _repro_configure("bogus"), "preset")
api("reproduce.configure(seeds=0)", lambda ctx: _repro_configure("smoke", seeds=0), "seeds")


def _rd_load(ctx, key, **kw):
    from real_data import data

    return data.load(ctx[key], **kw)


for key in ("missing", "textfile", "emptydir"):
    api(f"real_data.data.load({key})", lambda ctx, key=key: _rd_load(ctx, key), "{" + key + "}")
api("real_data.data.load(dataset='x')", lambda ctx: _rd_load(ctx, "emptydir", dataset="x"), ("dataset", "{emptydir}"))


# --------------------------------------------------------------------------- the scratch world

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A view_learning run folder (its config.json, no training) and a tiny real_data checkpoint."""
    root = tmp_path_factory.mktemp("hostile_shared")
    from theory_sims import view_learning as vl
    from theory_sims.results import as_json

    vlrun = root / "vlrun"
    vlrun.mkdir()
    (vlrun / "config.json").write_text(json.dumps(as_json(vl.configure().to_dict())))
    import torch

    from real_data.baselines import wrap
    from real_data.models import make_model

    meta = {"model": "fast", "num_classes": 2, "depth": 28, "width": 0.125, "dropout": 0.0, "mode": "full",
            "classes": ["class0", "class1"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    torch.manual_seed(0)
    net = wrap(make_model("fast", 2, 28, 0.125, 0.0), "full", 2)
    ckpt = root / "single-0.pt"
    torch.save({"meta": meta, "models": [net.state_dict()]}, ckpt)
    return {"vlrun": vlrun, "ckpt": ckpt}


def _scratch(tmp: Path, shared: dict) -> dict:
    """Bad files and folders under ``tmp``; keys are the ``{placeholders}`` of the cases."""
    ctx = {"out": tmp / "out", "missing": tmp / "no_such_thing", "emptydir": tmp / "emptydir",
           "textfile": tmp / "notes.txt", "badjson": tmp / "bad.json", "listjson": tmp / "list.json",
           "otherjson": tmp / "other.json", "otherrun": tmp / "otherrun", "data": tmp / "data",
           "npz_empty": tmp / "empty.npz", "npz_partial": tmp / "partial.npz", **shared}
    ctx["emptydir"].mkdir()
    ctx["data"].mkdir()
    ctx["textfile"].write_text("not a run\n")
    ctx["badjson"].write_text("{not json")
    ctx["listjson"].write_text("[1, 2]")
    ctx["otherjson"].write_text('{"a": 1}')
    ctx["otherrun"].mkdir()
    (ctx["otherrun"] / "config.json").write_text('{"foo": 1}')
    np.savez(ctx["npz_empty"])
    np.savez(ctx["npz_partial"], X=np.zeros((2, 3, 4), np.float32))
    return {k: str(v) for k, v in ctx.items()}


def _snapshot(tmp: Path) -> dict:
    return {str(p.relative_to(tmp)): (p.stat().st_mtime_ns, p.is_dir() or p.stat().st_size)
            for p in tmp.rglob("*")}


def _guard(mp: pytest.MonkeyPatch, cli_name: str) -> None:
    for module, attr in GUARDS[cli_name]:
        obj = importlib.import_module(module)
        *owners, name = attr.split(".")
        for o in owners:
            obj = getattr(obj, o)
        assert hasattr(obj, name), f"guard target {module}.{attr} is gone: update GUARDS"
        mp.setattr(obj, name, _silent)


def _fill(text: str, ctx: dict) -> str:
    for key, value in ctx.items():
        text = text.replace("{" + key + "}", value)
    return text


def classify(case, tmp: Path, shared: dict, capsys) -> tuple[str, str]:
    """(outcome, detail) of one case run in-process in the scratch folder ``tmp``."""
    ctx = _scratch(tmp, shared)
    before = _snapshot(tmp)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # a default runs/<name>-<time> lands in the scratch folder
        for var in ("DASK_SCHEDULER_ADDRESS", "CIFAR_DATA"):
            mp.delenv(var, raising=False)
        if isinstance(case, ApiCase):
            mp.setattr(importlib.import_module("theory_sims.train"), "_Stack", _silent)  # train() that got past its checks
            try:
                with warnings.catch_warnings():  # numpy's warnings on empty arrays: the outcome says it
                    warnings.simplefilter("ignore", RuntimeWarning)
                    case.call(ctx)
            except Silent:
                return "silent", "accepted (reached the guarded entry)"
            except (ValueError, TypeError) as err:
                names = [_fill(n, ctx) for n in case.names]
                if any(n in str(err) for n in names):
                    return "clean", f"{type(err).__name__}: {err}"
                return "traceback", f"{type(err).__name__} naming none of {names}: {err}"
            except Exception as err:  # noqa: BLE001
                return "traceback", f"{type(err).__name__}: {err}"
            return "silent", "returned"
        _guard(mp, case.cli)
        module = importlib.import_module(MODULES[case.cli])
        argv = [*(BASE.get(case.cli, []) if case.base else []), *case.argv]
        if case.out and case.cli in OUT:
            argv += ["--out", OUT[case.cli]]
        argv = [_fill(a, ctx) for a in argv]
        try:
            rc = module.main(argv)
        except Silent:
            return "silent", "accepted (reached the guarded entry)"
        except SystemExit as exit_:
            code = exit_.code
        except Exception as err:  # noqa: BLE001
            return "traceback", f"{type(err).__name__}: {err}"
        else:
            return ("silent", "exit 0") if rc in (0, None) else ("traceback", f"returned {rc}")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if code in (0, None):
        return "silent", f"exit 0: {err.strip()[:200]}"
    if code != 2:
        return "traceback", f"exit {code}: {err.strip()[:300]}"
    if len(lines) != 1 or "Traceback" in err:
        return "traceback", f"{len(lines)} lines on stderr: {err.strip()[:400]}"
    if not any(n in lines[0] for n in case.names):
        return "traceback", f"one line naming none of {list(case.names)}: {lines[0]}"
    after = _snapshot(tmp)
    if after != before:
        changed = sorted(set(after) ^ set(before)) or sorted(k for k in after if after[k] != before.get(k))
        return "traceback", f"refused but wrote {changed[:3]}: {lines[0]}"
    return "clean", lines[0]


# --------------------------------------------------------------------------- known defects

# case id -> reason; each is xfail(strict=True): the day it is fixed, the test says so.
DEFECTS: dict[str, str] = {}

_IDS = [c.id for c in CASES]
assert len(set(_IDS)) == len(_IDS), sorted({i for i in _IDS if _IDS.count(i) > 1})
assert set(DEFECTS) <= set(_IDS), sorted(set(DEFECTS) - set(_IDS))

_RESULTS: dict[str, tuple[str, str]] = {}


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason="defect: " + DEFECTS[c.id])] if c.id in DEFECTS else []
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_hostile_input_is_refused_cleanly(case, tmp_path, shared, capsys):
    outcome, detail = classify(case, tmp_path, shared, capsys)
    _RESULTS[case.id] = (outcome, detail)
    assert outcome == "clean", f"{outcome}: {detail}"


@pytest.mark.slow  # alone it runs every case itself (a few seconds); after the cases above, instantly
def test_hostile_summary(tmp_path_factory, shared, capsys):
    """Every case (those the parametrized tests did not run are run here): the counts, printed with
    ``-s``; no traceback and no silent acceptance but the known defects, and at least 250 cases."""
    for i, c in enumerate(CASES):
        if c.id not in _RESULTS:
            _RESULTS[c.id] = classify(c, tmp_path_factory.mktemp(f"case{i}"), shared, capsys)
    counts = {k: sum(1 for o, _ in _RESULTS.values() if o == k) for k in ("clean", "traceback", "silent")}
    unexpected = {i: r for i, r in _RESULTS.items() if r[0] != "clean" and i not in DEFECTS}
    fixed = [i for i in DEFECTS if _RESULTS[i][0] == "clean"]
    with capsys.disabled():
        print(f"\nhostile inputs: {len(CASES)} cases ({sum(isinstance(c, CliCase) for c in CASES)} command line, "
              f"{sum(isinstance(c, ApiCase) for c in CASES)} API): clean {counts['clean']}, traceback "
              f"{counts['traceback']}, silent {counts['silent']} ({len(DEFECTS)} known defects)")
        for i, (o, d) in sorted(_RESULTS.items()):
            if o != "clean":
                print(f"  {o}{' (known defect)' if i in DEFECTS else ''}: {i}\n      {d}")
    assert len(CASES) >= 250
    assert not unexpected, unexpected
    assert not fixed, f"known defects now refused cleanly, drop them from DEFECTS: {fixed}"
    assert counts["traceback"] == sum(1 for i in DEFECTS if _RESULTS[i][0] == "traceback")
    assert counts["silent"] == sum(1 for i in DEFECTS if _RESULTS[i][0] == "silent")
