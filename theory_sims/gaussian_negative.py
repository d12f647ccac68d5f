"""The paper's negative results: on Gaussian-like inputs an ensemble is no better than its members.

Allen-Zhu & Li report that when inputs have no view structure (Gaussians or mixtures of
Gaussians, labelled by linear, fully connected, convolutional or residual teacher networks, with or
without a margin, with or without label noise) an ensemble of independently trained networks is
no more accurate than the networks themselves. This experiment runs that grid:

    input {gaussian, mixture} x sampling {uniform, rejection} x teacher {linear, fc, conv, residual}
    x margin {no, yes} x label noise {no, yes}                                    (64 cells)

In every cell it draws a task (input distribution and teacher; see :mod:`multiview.gaussian`),
a training set and a test set, trains ``--seeds`` learners stacked, and reports the single models'
test accuracy (mean +- std), the ensemble's (the argmax of the mean of the models' logits), the
gain (ensemble minus mean member) with a 95% bootstrap interval over seeds and test samples
(:mod:`theory_sims.stats`), and train accuracy.

"Noise" has two readings (``--noise``). 'logit' (the default): the noise is part of the
distribution: every label, training and test, is the argmax of the teacher's logits plus Gumbel
noise of scale ``--logit-noise`` (0.1, in units of the logits' std, changes 11-12% of the labels
on every teacher), and the models are judged on those noisy test labels: the reading where noise
is part of the data distribution, as the paper lists it beside the inputs, the teachers and the
margin. 'flip': ``--label-noise`` of the training labels are flipped to another class, and the
models are judged on the teacher's clean test labels; interpolating networks memorise the flips
differently, so averaging them cancels part of it (a config.json from before ``--noise`` existed
reads back as 'flip', the reading of then).

``--widths W1,W2,...`` runs the grid once per width of the standard learner, with the multi-view
contrast at each width (the same learner on :mod:`theory_sims.view_learning`'s default data, and
the theory's learner there) and ``gain_vs_width.png``. The paper's point, measured there: on
Gaussian-like data the gain is seed-to-seed variance, which shrinks as networks widen (on the
quick cells it halves per doubling and is zero within its interval at 4096, docs/gaussian.md); on
multi-view data it is the views a single model misses, which needs a learner whose seeds learn
different views.

The learner (``--learner``, the same settings in every cell: nothing is tuned per cell) is by
default the standard one, an over-parameterised ReLU network trained until it fits its training
set (:mod:`theory_sims.standard`; ``--width`` widens it), or with ``--learner theory`` the paper's
two-layer network, F_i(X) = sum_r sum_p sReLU(<w_{i,r}, x_p>) (``--m`` widens it). The input is one
patch of dimension ``dim`` for the linear, fc and residual teachers and ``conv_patches`` patches
for the convolutional teacher (whose filters act on patches).

Every cell is a job (:mod:`theory_sims.cluster`): by default (``--cluster auto``) the cells share
the cores as a local Dask cluster on a machine of 4 or more cores and run one after another in this
process below that; ``--cluster serial`` or ``local`` chooses, ``--cluster tcp://HOST:PORT`` runs
them on your scheduler. Each finished cell's record lands in ``RUN/jobs/``, so a
stopped grid keeps what it finished and ``--resume RUN`` (with the same flags) runs only the rest;
the table and figures are rebuilt from the records and are the same whatever ran them.

For contrast, the multi-view gain of :mod:`theory_sims.view_learning` at its defaults (single
models and their ensemble only) is measured in the same run, or read from a ``results.json``
of that experiment (``--multiview-results``).

The run folder holds config.json, results.json, table.csv, the figures and report.md (the run on
one page). ``--config RUN`` starts from an earlier gaussian_negative run's settings (flags given
beside it override them): the same flags re-create the run.

Example::

    python -m theory_sims.gaussian_negative --quick
    python -m theory_sims.gaussian_negative --out runs/negative
    python -m theory_sims.gaussian_negative --config runs/negative --seeds 20 --out runs/negative-20
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import theory_sims  # noqa: F401  (sets the thread-spin environment before numpy work starts)
from multiview.checks import check_choice, check_float, check_int
from multiview.cli import Parser, as_flag, given, param, progress_bars, refuse_inert, require_cuda
from multiview.gaussian import INPUTS, SAMPLINGS, TEACHERS, GaussianConfig, GaussianTask
from theory_sims import cluster, standard, stats
from theory_sims.config import LearnerConfig, TrainConfig
from theory_sims.standard import StandardConfig
from theory_sims.train import train

LEARNERS = ("standard", "theory")
NOISES = ("flip", "logit")
DEFAULT_LEARNER = LearnerConfig(k=10, m=10, q=1, varrho=1.0, sigma0=0.1)
DEFAULT_TRAIN = TrainConfig(lr=5.0, steps=300, track_every=0)

# The representative subset of --quick: every teacher on Gaussian inputs and every MLP teacher on
# mixtures, clean; then one cell with noise for each MLP teacher, two of them also with a margin
# and rejection sampling. The conv teacher's CNN (four patches, and twice the Adam steps to fit)
# costs as much as four MLP cells, so it runs once; its other 15 cells are in the full grid.
QUICK = [dict(input="gaussian", sampling="uniform", teacher=t, margin=False, label_noise=False) for t in TEACHERS] + [
    dict(input="mixture", sampling="uniform", teacher=t, margin=False, label_noise=False)
    for t in TEACHERS if t != "conv"] + [
    dict(input="gaussian", sampling="uniform", teacher="linear", margin=False, label_noise=True),
    dict(input="gaussian", sampling="rejection", teacher="fc", margin=True, label_noise=True),
    dict(input="mixture", sampling="rejection", teacher="residual", margin=True, label_noise=True),
]


@dataclass(frozen=True)
class NegativeConfig:
    """Everything one run of the grid depends on; serialised to config.json."""

    k: int = param("number of classes", 10)
    dim: int = param("input dimension (patches x patch dimension)", 64)
    conv_patches: int = param("patches of the input for the convolutional teacher (must divide dim)", 4)
    components: int = param("mixture components (input 'mixture')", 20)
    teacher_width: int = param("hidden width / filters of the teachers", 64)
    margin: float = param("the margin of the 'yes' cells, in units of the teacher's logit std", 0.5)
    label_noise: float = param("--noise flip: the fraction of flipped training labels in the 'yes' cells", 0.1)
    noise: str = param("the reading of the 'yes' cells' noise: 'flip' flips --label-noise of the training labels "
                       "(test labels clean); 'logit' draws every label, training and test, from the teacher's "
                       "logits plus Gumbel noise of scale --logit-noise (noise as part of the data, as Figure 4 "
                       "lists it beside margin and sampling)", "logit")
    logit_noise: float = param("--noise logit: the Gumbel noise's scale, in units of the teacher's logit std "
                               "(0.1 changes 11 to 12 labels in 100 on every teacher)", 0.1)
    n_train: int = param("training samples per cell", 2000)
    n_test: int = param("test samples per cell", 5000)
    seeds: int = param("learners per cell (stacked), ensembled", 10)
    n_boot: int = param("bootstrap resamples of the gain interval", 2000)
    seed: int = param("seed of the tasks, data and learners", 0)
    learner_kind: str = param("'standard' (an MLP, or a CNN over the conv teacher's patches, with signed output "
                              "weights and biases, trained to fit) or 'theory' (the paper's two-layer learner)",
                              "standard")
    multiview_n_train: int = param("with --widths: training samples of the multi-view contrast (view_learning's "
                                   "data; at its default 150 the standard learner fits them by their noise)", 150)
    widths: tuple = param("widths of the standard learner to run the grid at, each with the multi-view contrast "
                          "(empty: the grid once, at --width)", ())
    standard: StandardConfig = StandardConfig()
    learner: LearnerConfig = DEFAULT_LEARNER
    train: TrainConfig = DEFAULT_TRAIN

    def __post_init__(self):
        check_choice("learner_kind", self.learner_kind, LEARNERS)
        check_int("k", self.k, 2)
        check_int("dim", self.dim, 1)
        check_int("conv_patches", self.conv_patches, 1, self.dim)
        if self.dim % self.conv_patches:
            raise ValueError(f"conv_patches must divide dim={self.dim}, got {self.conv_patches}")
        check_int("components", self.components, 1)
        check_int("teacher_width", self.teacher_width, 1)
        check_float("margin", self.margin, 0.0, lo_open=True)
        check_float("label_noise", self.label_noise, 0.0, 1.0, lo_open=True, hi_open=True)
        check_choice("noise", self.noise, NOISES)
        object.__setattr__(self, "widths", tuple(self.widths))  # a list from config.json reads back as the tuple
        for w in self.widths:
            check_int("widths", w, 1)
        if len(set(self.widths)) < len(self.widths):
            raise ValueError(f"widths must be distinct, got {','.join(map(str, self.widths))}")
        if self.widths and self.learner_kind != "standard":
            raise ValueError("widths must be given with --learner standard (they are the standard learner's)")
        check_float("logit_noise", self.logit_noise, 0.0, lo_open=True)
        check_int("n_train", self.n_train, 1)
        check_int("multiview_n_train", self.multiview_n_train, 1)
        if self.n_train < self.k:
            raise ValueError(f"n_train must be at least k (one training sample per class), got n_train="
                             f"{self.n_train} with k={self.k}")
        check_int("n_test", self.n_test, 1)
        check_int("seeds", self.seeds, 2)
        check_int("n_boot", self.n_boot, 1)
        check_int("seed", self.seed, 0)
        if self.learner.k != self.k:
            raise ValueError(f"learner k must equal k={self.k}, got {self.learner.k}")
        check_int("steps", self.train.steps, 1)  # untrained learners have no verdict
        if self.train.loss != "ce":
            raise ValueError(f"train loss must be 'ce' (single models on labels), got {self.train.loss!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def grid(quick: bool = False) -> list[dict]:
    """The cells to run, as dicts of input, sampling, teacher, margin (bool), label_noise (bool)."""
    if quick:
        return [dict(c) for c in QUICK]
    axes = dict(input=INPUTS, sampling=SAMPLINGS, teacher=TEACHERS, margin=(False, True), label_noise=(False, True))
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def task_config(cfg: NegativeConfig, cell: dict) -> GaussianConfig:
    """The Gaussian-like task of a cell; the conv teacher sees ``conv_patches`` patches."""
    patches = cfg.conv_patches if cell["teacher"] == "conv" else 1
    return GaussianConfig(
        k=cfg.k, patches=patches, patch_dim=cfg.dim // patches, input=cell["input"], components=cfg.components,
        teacher=cell["teacher"], teacher_width=cfg.teacher_width, sampling=cell["sampling"],
        margin=cfg.margin if cell["margin"] else 0.0,
        label_noise=cfg.label_noise if cell["label_noise"] and cfg.noise == "flip" else 0.0,
        logit_noise=cfg.logit_noise if cell["label_noise"] and cfg.noise == "logit" else 0.0,
    )


def run_cell(cfg: NegativeConfig, cell: dict) -> dict:
    """Train the cell's seeds and score them and their ensemble.

    The task (its mixture means and teacher) depends on the seed, the input and the teacher
    only, so cells that differ in sampling, margin or noise share a teacher.
    """
    t0 = time.perf_counter()
    gc = task_config(cfg, cell)
    task_seed = [cfg.seed, INPUTS.index(cell["input"]), TEACHERS.index(cell["teacher"])]
    task = GaussianTask(gc, seed=np.random.SeedSequence(task_seed))
    train_set = task.sample(cfg.n_train, seed=np.random.SeedSequence(task_seed + [1]))
    test_set = task.sample(cfg.n_test, seed=np.random.SeedSequence(task_seed + [2]))
    seeds = range(cfg.seed * 1000, cfg.seed * 1000 + cfg.seeds)
    if cfg.learner_kind == "standard":
        result = standard.fit(train_set.X, train_set.y, seeds, cfg.k, cfg.standard)
        logits = result.logits(test_set.X)
    else:
        result = train(train_set.X, train_set.y, seeds, cfg.learner, cfg.train)
        logits = result.model.logits(test_set.X, cfg.train.backend, cfg.train.device)
    y = test_set.clean_y if cfg.noise == "flip" else test_set.y  # 'logit': the noise is the test data's too
    individual = (logits.argmax(-1) == y).mean(axis=1)
    ensemble = float((stats.ensemble_output(logits).argmax(-1) == y).mean())
    lo, hi = stats.gain_interval(logits, y, n_boot=cfg.n_boot, seed=cfg.seed)
    return {
        "cell": dict(cell),
        "individual_acc": individual.tolist(),
        "individual_mean": float(individual.mean()),
        "individual_std": float(individual.std(ddof=1)),
        "ensemble_acc": ensemble,
        "gain": ensemble - float(individual.mean()),
        "gain_ci": [lo, hi],
        **where_the_gain_is(logits, y, train_set, test_set),
        "train_acc": result.train_acc.tolist(),
        "fit_step": result.fit_step.tolist(),  # first step at 100% training accuracy, -1 if never
        "train_acc_mean": float(result.train_acc.mean()),
        "train_label_noise": float(train_set.flipped.mean()),  # labels the noise changed
        "test_label_noise": float((y != test_set.clean_y).mean()),  # test labels the models are judged on
        "width": cfg.standard.width if cfg.learner_kind == "standard" else None,
        "wall_s": time.perf_counter() - t0,
    }


BOUNDARY_SHARE = 0.2  # "near the teacher's boundary": this share of the test samples, smallest margin first


def gain_on(logits: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    """The ensemble's gain over the mean single model on the test samples ``mask`` (nan if none)."""
    if not mask.any():
        return float("nan")
    z, t = logits[:, mask], y[mask]
    return float((stats.ensemble_output(z).argmax(-1) == t).mean() - (z.argmax(-1) == t).mean())


def nearest_training_sample(train_X: np.ndarray, test_X: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of each test input's nearest training input (Euclidean, over the flattened patches)."""
    A = np.asarray(train_X, dtype=np.float64).reshape(len(train_X), -1)
    B = np.asarray(test_X, dtype=np.float64).reshape(len(test_X), -1)
    sq = (A * A).sum(1)
    return np.concatenate([np.argmin(sq[None, :] - 2 * B[i:i + chunk] @ A.T, axis=1)
                           for i in range(0, len(B), chunk)])


def where_the_gain_is(logits: np.ndarray, y: np.ndarray, train_set, test_set) -> dict:
    """What a cell's gain is made of, measured: how often two single models disagree on a test
    sample; the gain on the test samples nearest the teacher's boundary (the ``BOUNDARY_SHARE``
    with the smallest teacher margin) and on the rest; and, where the noise changed training
    labels, the gain on the test samples whose nearest training sample carries a changed label and
    on the rest (interpolating models fit a changed label each in its own way around it)."""
    pred = logits.argmax(-1)  # (S, n)
    S = len(pred)
    pairs = [(a, b) for a in range(S) for b in range(a + 1, S)]
    near = test_set.margin <= np.quantile(test_set.margin, BOUNDARY_SHARE)
    out = {"disagreement": float(np.mean([(pred[a] != pred[b]).mean() for a, b in pairs])),
           "gain_near_boundary": gain_on(logits, y, near), "gain_far_from_boundary": gain_on(logits, y, ~near)}
    if train_set.flipped.any():
        by_noisy = train_set.flipped[nearest_training_sample(train_set.X, test_set.X)]
        out.update(near_noisy_share=float(by_noisy.mean()), gain_near_noisy=gain_on(logits, y, by_noisy),
                   gain_near_clean=gain_on(logits, y, ~by_noisy))
    return out


def multiview_reference(seeds: int = 10, backend: str = "numba", device: str = "cpu") -> dict:
    """Single models and their ensemble on :mod:`theory_sims.view_learning`'s default data."""
    from theory_sims import experiments as ex
    from theory_sims import view_learning as vl

    cfg = vl.configure(seeds=seeds, students=1, random_features=False,
                       train=dict(backend=backend, device=device))
    train_set, tests = vl.make_data(cfg)
    ev = ex.Evaluator(train_set, tests, backend, device)
    single = ex.fit(train_set, range(cfg.seed * 1000, cfg.seed * 1000 + seeds), cfg.learner, cfg.train)
    return _multiview_gains(ev.models(single), ev.ensemble(single), "the theory's learner, measured in this run")


def multiview_standard(seeds: int, standard_cfg: StandardConfig, n_train: int = 150) -> dict:
    """The standard learner of the grid (at its width) on :mod:`theory_sims.view_learning`'s
    default data with ``n_train`` training samples: its single models and their ensemble, as
    :func:`multiview_reference` does for the theory's learner. Its CNN filters act on the data's
    patches."""
    from theory_sims import experiments as ex
    from theory_sims import view_learning as vl

    cfg = vl.configure(seeds=seeds, students=1, random_features=False, n_train=n_train)
    train_set, tests = vl.make_data(cfg)
    result = standard.fit(train_set.X, train_set.y, range(cfg.seed * 1000, cfg.seed * 1000 + seeds), cfg.data.k,
                          standard_cfg)
    logits = {"multi": result.logits(tests.multi.X), "single": result.logits(tests.single.X)}
    individual = ex.scores(logits, tests)
    ensemble = ex.mean_scores(ex.scores(ex.ensemble_logits(logits), tests))
    out = _multiview_gains(individual, ensemble, f"the standard learner at width {standard_cfg.width}")
    out["width"] = standard_cfg.width
    out["n_train"] = n_train
    out["train_acc"] = result.train_acc.tolist()
    return out


def multiview_from_results(path) -> dict:
    """The multi-view gains from a ``results.json`` written by ``theory_sims.view_learning``."""
    try:
        res = json.loads(Path(path).read_text())
        individual, ensemble = res["individual"], res["ensemble"]
        values = {f"{part}.{key}": entry[key] for part, entry in (("individual", individual), ("ensemble", ensemble))
                  for key in ("test_acc", "single_view_acc", "multi_view_acc")}
    except OSError as err:
        raise ValueError(f"--multiview-results {path}: cannot be read ({err.strerror or err})") from None
    except ValueError:
        raise ValueError(f"--multiview-results {path}: not JSON, so not a results.json of "
                         f"theory_sims.view_learning") from None
    except (KeyError, TypeError) as err:
        raise ValueError(f"--multiview-results {path}: not a results.json of theory_sims.view_learning "
                         f"(it lacks {err})") from None
    for name, value in values.items():
        _check_accuracies(path, name, value, many=name.startswith("individual."))
    return _multiview_gains(individual, ensemble, f"the theory's learner, read from {path}")


def _check_accuracies(path, name: str, value, many: bool) -> None:
    """An accuracy in the file: a number in [0, 1], or for ``many`` a non-empty list of them."""
    values = value if many and isinstance(value, list) else [value]
    ok = (not many or isinstance(value, list)) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in values)
    if not ok:
        what = "a non-empty list of accuracies in [0, 1]" if many else "an accuracy in [0, 1]"
        raise ValueError(f"--multiview-results {path}: {name} must be {what}, got {json.dumps(value)[:80]}")


def _multiview_gains(individual: dict, ensemble: dict, source: str) -> dict:
    out = {"source": source}
    for key in ("test_acc", "single_view_acc", "multi_view_acc"):
        out[key] = {"individual_mean": float(np.mean(individual[key])), "ensemble": float(ensemble[key]),
                    "gain": float(ensemble[key] - np.mean(individual[key]))}
    return out


def summarise(cells: list[dict], threshold: float = 0.01) -> dict:
    gains = np.array([c["gain"] for c in cells])
    return {
        "cells": len(cells),
        "threshold": threshold,
        "fraction_at_or_below_threshold": float(np.mean(gains <= threshold)),
        "median_gain": float(np.median(gains)),
        "max_gain": float(gains.max()),
        "min_gain": float(gains.min()),
        "cells_above_threshold": [_cell_name(c["cell"]) for c in cells if c["gain"] > threshold],
    }


def _cell_name(cell: dict) -> str:
    extras = [name for name in ("margin", "label_noise") if cell[name]]
    return "/".join([cell["input"], cell["sampling"], cell["teacher"]] + extras)


def table_rows(cells: list[dict]) -> list[dict]:
    rows = []
    for c in cells:
        rows.append({**c["cell"], **({"width": c["width"]} if c.get("width") is not None else {}),
                     "train_acc": c["train_acc_mean"], "single_mean": c["individual_mean"],
                     "single_std": c["individual_std"], "ensemble": c["ensemble_acc"], "gain": c["gain"],
                     "gain_lo": c["gain_ci"][0], "gain_hi": c["gain_ci"][1], "wall_s": c["wall_s"]})
    return rows


def format_table(rows: list[dict]) -> str:
    width = any("width" in r for r in rows)
    head = (("width " if width else "") + f"{'input':9} {'sampling':9} {'teacher':8} {'margin':6} {'noise':5} {'train':>6} "
            f"{'single':>13} {'ensemble':>8} {'gain (pts)':>10} {'95% interval':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            (f"{r['width']:5d} " if width else "") + f"{r['input']:9} {r['sampling']:9} {r['teacher']:8} {'yes' if r['margin'] else 'no':6} "
            f"{'yes' if r['label_noise'] else 'no':5} {r['train_acc']:6.3f} "
            f"{r['single_mean']:.3f} ± {r['single_std']:.3f} {r['ensemble']:8.3f} {100 * r['gain']:+10.2f} "
            f"  [{100 * r['gain_lo']:+5.2f}, {100 * r['gain_hi']:+5.2f}]"
        )
    return "\n".join(lines)


def cell_key(cell: dict) -> str:
    """The file-safe name of a cell's job record, e.g. ``mixture-uniform-conv-label_noise``."""
    return _cell_name(cell).replace("/", "-")


REFERENCE_KEY = "multiview-reference"


def width_configs(cfg: NegativeConfig) -> list[NegativeConfig]:
    """The grid's config at each of its ``widths`` (the config itself without them)."""
    if not cfg.widths:
        return [cfg]
    return [dataclasses.replace(cfg, widths=(), standard=dataclasses.replace(cfg.standard, width=w))
            for w in cfg.widths]


def width_key(width: int) -> str:
    return f"multiview-w{width}"


def run(cfg: NegativeConfig, cells: list[dict], records, where: cluster.Where = cluster.Where(),
        reference: bool = False, progress: bool = False, log=print,
        kept: list | None = None) -> tuple[list[dict], dict | None]:
    """Every cell as a job (its record in ``records``; cells with a record are not run again) and,
    with ``reference``, the multi-view reference as one more; returns (cell results in the order
    of ``cells``, the reference or None). With ``cfg.widths`` every cell runs at each width (results
    width by width) and the reference is ``{"by_width": [the standard learner on multi-view data at
    each width], "theory": the theory's learner on it (as without widths)}``. Keys of jobs kept
    from an earlier process go to ``kept``."""

    def line(key, res):
        if key == REFERENCE_KEY or key.startswith("multiview-w"):
            at = f" at width {res['width']}" if "width" in res else ""
            return f"  multi-view reference{at}: ensemble gain {100 * res['single_view_acc']['gain']:+.2f} pts single-view"
        width = f"w{res['width']} " if cfg.widths else ""
        return (f"  {width}{_cell_name(res['cell']):42} single {res['individual_mean']:.3f} ensemble "
                f"{res['ensemble_acc']:.3f} gain {100 * res['gain']:+.2f} pts ({res['wall_s']:.1f} s)")

    keys, jobs = [], []
    for c_w in width_configs(cfg):
        prefix = f"w{c_w.standard.width}-" if cfg.widths else ""
        # the conv teacher's cells (a CNN over patches) take about 4x the others; the references, longer still
        jobs += [cluster.Job(prefix + cell_key(c), run_cell, (c_w, c), cost=(4.0 if c["teacher"] == "conv" else 1.0)
                             * c_w.standard.width / StandardConfig.width) for c in cells]
        keys += [prefix + cell_key(c) for c in cells]
        if reference and cfg.widths:
            jobs.insert(0, cluster.Job(width_key(c_w.standard.width), multiview_standard,
                                       (cfg.seeds, c_w.standard, cfg.multiview_n_train),
                                       cost=10.0 * c_w.standard.width / StandardConfig.width))
    if reference:  # the theory's learner on the multi-view data: where the paper's gain lives
        jobs.insert(0, cluster.Job(REFERENCE_KEY, multiview_reference, (cfg.seeds, cfg.train.backend, cfg.train.device),
                                   cost=10.0))
    out = cluster.run_jobs(jobs, records, where, log=log, progress=progress, on_done=line, kept=kept)
    if not reference:
        return [out[k] for k in keys], None
    if cfg.widths:
        return [out[k] for k in keys], {"by_width": [out[width_key(w)] for w in cfg.widths], "theory": out[REFERENCE_KEY]}
    return [out[k] for k in keys], out[REFERENCE_KEY]


# --------------------------------------------------------------------------------------------- CLI

FLAGS = {  # NegativeConfig fields offered on the command line
    "seeds": int, "n_train": int, "n_test": int, "dim": int, "conv_patches": int, "k": int,
    "margin": float, "noise": str, "label_noise": float, "logit_noise": float, "n_boot": int, "seed": int,
    "multiview_n_train": int,
}


def build_parser() -> Parser:
    p = Parser(prog="python -m theory_sims.gaussian_negative", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help=f"run {len(QUICK)} representative cells instead of the 64 of the grid")
    p.add_argument("--config", default=None, metavar="RUN",
                   help="start from the settings of an earlier gaussian_negative run: RUN is its folder or its "
                        "config.json (its grid and data, learner, --quick and its multi-view comparison); flags "
                        "given beside it override those settings (the same flags re-create the run: its "
                        "results.json equals the original's but for timings)")
    p.add_argument("--out", default=None, help="run folder (default: runs/gaussian_negative-<time>)")
    p.add_argument("--multiview-results", default=None, metavar="PATH",
                   help="results.json of a theory_sims.view_learning run to compare with "
                        "(default: train its default single models and ensemble in this run)")
    p.add_argument("--no-multiview", action="store_true", help="skip the multi-view comparison")
    p.add_argument("--backend", choices=("numba", "torch"), default=None,
                   help="trainer backend (default: numba, or torch with --device cuda)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="device of the torch backend (default: cpu)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars are drawn only on a terminal; elsewhere, e.g. in a log, one "
                        "plain line per finished job)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue the grid in folder RUN, given with the same flags as when it started: cells whose "
                        "record is in RUN/jobs are kept, the others run")
    cluster.add_flags(p, default="auto")
    g = p.add_argument_group("grid and data")
    fields = {f.name: f for f in dataclasses.fields(NegativeConfig)}
    for name, kind in FLAGS.items():
        f = fields[name]
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
                       help=f"{f.metadata['help']} (default: {f.default})")
    g.add_argument("--widths", default=None, metavar="W1,W2,...",
                   help="run the grid at each of these widths of the standard learner (e.g. 256,512,1024,2048), with "
                        "the multi-view contrast (the same learner on view_learning's data) at each: gain_vs_width.png "
                        "(default: the grid once, at --width)")
    p.add_argument("--learner", choices=LEARNERS, default=None,
                   help="'standard': an over-parameterised ReLU network trained until it fits its training set "
                        "(see theory_sims.standard); 'theory': the paper's two-layer learner (default: standard)")
    st = p.add_argument_group("standard learner (--learner standard; the same in every cell)")
    for f in dataclasses.fields(StandardConfig):
        st.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=None,
                        metavar=type(f.default).__name__.upper(), help=f"{f.metadata['help']} (default: {f.default})")
    lr = p.add_argument_group("theory learner (--learner theory; the same in every cell)")
    lr.add_argument("--m", type=int, default=None, help=f"neurons per class; more is a wider learner (default: {DEFAULT_LEARNER.m})")
    lr.add_argument("--q", type=int, default=None, help=f"power of the smoothed ReLU; 1 is the ReLU (default: {DEFAULT_LEARNER.q})")
    lr.add_argument("--sigma0", type=float, default=None, help=f"init std (default: {DEFAULT_LEARNER.sigma0})")
    lr.add_argument("--lr", type=float, default=None, help=f"learning rate of full-batch GD (default: {DEFAULT_TRAIN.lr})")
    lr.add_argument("--steps", type=int, default=None, help=f"training steps (default: {DEFAULT_TRAIN.steps})")
    return p


def config_from_args(args, start: dict | None = None) -> NegativeConfig:
    """The config the flags describe, over ``start`` (the fields of an earlier run's config, ``--config``)
    or else the defaults."""
    require_cuda(args.device)
    if args.device == "cuda":
        args.backend = args.backend or "torch"
    saved = dict(start or {})
    learner0 = LearnerConfig(**saved.pop("learner")) if "learner" in saved else DEFAULT_LEARNER
    train0 = TrainConfig(**saved.pop("train")) if "train" in saved else DEFAULT_TRAIN
    # a run from before the CNN pooled its patches read them concatenated
    std0 = StandardConfig(**{"pool": "concat", **saved.pop("standard")}) if "standard" in saved else StandardConfig()
    if start is not None:  # a run from before --noise existed flipped its training labels
        saved.setdefault("noise", "flip")
    top = {**saved, **given(args, list(FLAGS))}
    k = top.get("k", NegativeConfig.k)
    learner = dataclasses.replace(learner0, k=k, **given(args, ["m", "q", "sigma0"]))
    train_cfg = dataclasses.replace(train0, **given(args, ["lr", "steps", "backend", "device"]))
    std = dataclasses.replace(std0, **given(args, [f.name for f in dataclasses.fields(StandardConfig)]))
    if args.learner is not None:
        top["learner_kind"] = args.learner
    if args.widths is not None:
        top["widths"] = parse_widths(args.widths)
    cfg = NegativeConfig(learner=learner, train=train_cfg, standard=std, **top)
    refuse_inert(args, cfg, INERT_FLAGS)
    return cfg


def parse_widths(text: str) -> tuple[int, ...]:
    """``--widths 256,512``: distinct integers >= 1, smallest first; ValueError naming --widths."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--widths must be integers >= 1 separated by commas, like 256,512,1024, got {text!r}") from None
    if not widths or min(widths) < 1 or len(set(widths)) < len(widths):
        raise ValueError(f"--widths must be distinct integers >= 1 separated by commas, like 256,512,1024, got {text!r}")
    return tuple(sorted(widths))


# Each learner's flags act only with that learner: (flag, argparse dest, whether it acts, the mode it needs).
INERT_FLAGS = (
    ("--label-noise", "label_noise", lambda c: c.noise == "flip", "unless --noise flip"),
    ("--logit-noise", "logit_noise", lambda c: c.noise == "logit", "unless --noise logit"),
    ("--width", "width", lambda c: not c.widths, "with --widths (each width of the list is run)"),
    ("--multiview-n-train", "multiview_n_train", lambda c: bool(c.widths), "without --widths (it sizes the contrast "
     "run at each width)"),
    *((f"--{f.name.replace('_', '-')}", f.name, lambda c: c.learner_kind == "standard", "unless --learner standard")
      for f in dataclasses.fields(StandardConfig)),
    *((f"--{name}", name, lambda c: c.learner_kind == "theory", "unless --learner theory")
      for name in ("m", "q", "sigma0", "lr", "steps")),
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from theory_sims.results import read_run_config

    try:
        start = None
        if args.config is not None:
            extra = ("quick", "cells", "multiview_results", "no_multiview")
            saved = read_run_config(args.config, "gaussian_negative",
                                    (*(f.name for f in dataclasses.fields(NegativeConfig)), *extra))
            start = {key: value for key, value in saved.items() if key not in extra}
            args.quick = args.quick or bool(saved["quick"])
            if args.multiview_results is None and not args.no_multiview:  # the run's comparison, unless given
                args.multiview_results, args.no_multiview = saved["multiview_results"], bool(saved["no_multiview"])
        try:
            try:
                cfg = config_from_args(args, start)
            except TypeError as err:  # a config.json edited by hand
                raise ValueError(f"--config {args.config}: its settings cannot be read ({err})") from None
        except ValueError as err:
            raise ValueError(as_flag(str(err), names=[*FLAGS, "widths", "m", "q", "sigma0", "lr", "steps",
                                                      *(f.name for f in dataclasses.fields(StandardConfig))])) from None
        if args.multiview_results is not None and args.no_multiview:
            raise ValueError("--multiview-results and --no-multiview exclude each other")
        if args.multiview_results is not None and cfg.widths:
            raise ValueError("--multiview-results with --widths: the run measures the multi-view contrast itself, with "
                             "the standard learner at each width; drop --multiview-results")
        reference = (multiview_from_results(args.multiview_results)
                     if args.multiview_results is not None else None)
    except ValueError as err:
        parser.error(str(err))
    from theory_sims.results import command_line, start_run, write_csv, write_json, write_report

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    cells = grid(args.quick)
    config = {**cfg.to_dict(), "quick": args.quick, "cells": cells, "multiview_results": args.multiview_results,
              "no_multiview": args.no_multiview}
    try:
        where = cluster.where(args)
        out = start_run(args.out, args.resume, "gaussian_negative", config)
    except ValueError as err:
        parser.error(str(err))
    t0 = time.perf_counter()
    log(f"{len(cells)} cells, {cfg.seeds} seeds each, n_train={cfg.n_train}, n_test={cfg.n_test}; "
        f"jobs on {where.mode if where.mode != 'address' else where.address}, records in {out / 'jobs'}")
    measure = reference is None and not args.no_multiview
    kept = []
    results, measured = run(cfg, cells, out / "jobs", where, reference=measure,
                            progress=progress_bars(args.quiet), log=log, kept=kept)
    reference = measured if measure else reference
    timing = {"total": time.perf_counter() - t0, "earlier_processes": cluster.earlier_work(out / "jobs", kept)}
    summary = summarise(results)
    rows = table_rows(results)
    by_width = widths_summary(cfg, results, reference) if cfg.widths else None
    write_json(out / "results.json", {"cells": results, "summary": summary, "multiview": reference,
                                      **({"by_width": by_width} if by_width else {}), "timing_s": timing})
    write_csv(out / "table.csv", rows)
    from theory_sims import figures

    widest = [r for r in results if r.get("width") == max(cfg.widths)] if cfg.widths else results
    widest_reference = reference["by_width"][-1] if cfg.widths and reference else reference
    theory = reference["theory"] if cfg.widths and reference else None  # the theory's learner beside the widths
    if not args.no_figures:
        panels, purple = figure_panels(cfg, results, reference)
        figures.save_figure(figures.individual_vs_ensemble(panels, noise_words(cfg), theory=purple),
                            out / "individual_vs_ensemble.png")
        figures.gaussian_negative_figures(out, widest, widest_reference, noise_words(cfg))
        if by_width:
            figures.save_figure(figures.gain_vs_width(by_width, noise_words(cfg), theory), out / "gain_vs_width.png")
    verdict = [verdict_line(summarise(widest), widest_reference, f" at width {max(cfg.widths)}" if cfg.widths else "")]
    if theory is not None:
        sv = theory["single_view_acc"]
        verdict.append(f"multi-view data ({theory['source']}): single models "
                       f"{sv['individual_mean']:.3f} on single-view samples, their ensemble {sv['ensemble']:.3f}: "
                       f"gain {100 * sv['gain']:+.2f} pts")
    verdict += outside_lines(widest)
    if by_width:
        verdict += [format_widths(by_width)]
    print(format_table(rows))
    print("\n".join(verdict))
    write_report(out, "gaussian_negative: the ensemble's gain on Gaussian-like data, beside multi-view data",
                 command_line(parser.prog, argv), [("The grid", format_table(rows)), ("The verdict", "\n".join(verdict)),
                                                   ("Time", cluster.format_total(timing))],
                 figures.GAUSSIAN_NEGATIVE_FIGURES)
    print(f"{cluster.format_total(timing)}; results in {out}, on one page in {out / 'report.md'}")
    return 0


def figure_panels(cfg: NegativeConfig, results: list[dict], reference: dict | None):
    """The panels of ``individual_vs_ensemble.png`` (width, its cells, the grid's own learner on
    multi-view data there: its green rows) and the theory's learner on that data (its purple rows).
    The measured reference is always the theory's learner (view_learning's single models), so it
    is green only when the grid ran that learner; with --widths it sits beside each width's own."""
    if cfg.widths:
        return ([(w, [r for r in results if r["width"] == w], reference["by_width"][i] if reference else None)
                 for i, w in enumerate(cfg.widths)], reference["theory"] if reference else None)
    if cfg.learner_kind == "standard":
        return [(None, results, None)], reference
    return [(None, results, reference)], None


def noise_words(cfg: NegativeConfig) -> str:
    """What the noisy cells' noise is, for legends and lines."""
    if cfg.noise == "flip":
        return f"{100 * cfg.label_noise:g}% of the training labels flipped"
    return f"labels from the teacher's logits + Gumbel noise of scale {cfg.logit_noise:g}"


def verdict_line(summary: dict, reference: dict | None, where: str = "") -> str:
    line = (f"gain <= {100 * summary['threshold']:.0f} pt in {summary['fraction_at_or_below_threshold']:.0%} of "
            f"{summary['cells']} cells{where}; median {100 * summary['median_gain']:+.2f} pts, "
            f"max {100 * summary['max_gain']:+.2f} pts")
    if reference is not None:
        sv, ta = reference["single_view_acc"], reference["test_acc"]
        line += (f"\nmulti-view data ({reference['source']}): single models' test accuracy "
                 f"{ta['individual_mean']:.3f}; ensemble gain {100 * ta['gain']:+.2f} pts on its "
                 f"test mixture, {100 * sv['gain']:+.2f} pts on single-view samples")
    return line


def outside_lines(cells: list[dict], threshold: float = 0.01) -> list[str]:
    """For every cell whose gain is above ``threshold``, what its gain is made of (measured by
    :func:`where_the_gain_is`): how often its single models disagree, and its gain near the
    teacher's boundary and elsewhere, and near a training label the noise changed and elsewhere."""
    lines = []
    for c in sorted((c for c in cells if c["gain"] > threshold), key=lambda c: -c["gain"]):
        lo, hi = (100 * v for v in c["gain_ci"])
        line = (f"  {_cell_name(c['cell'])}: {100 * c['gain']:+.2f} [{lo:+.2f}, {hi:+.2f}] pts, single models "
                f"{c['individual_mean']:.3f} (train {c['train_acc_mean']:.3f}); they disagree on "
                f"{c['disagreement']:.0%} of test samples; gain {100 * c['gain_near_boundary']:+.1f} on the "
                f"{BOUNDARY_SHARE:.0%} nearest the teacher's boundary, {100 * c['gain_far_from_boundary']:+.1f} elsewhere")
        if "gain_near_noisy" in c:
            line += (f"; {100 * c['gain_near_noisy']:+.1f} beside a changed training label "
                     f"({c['near_noisy_share']:.0%} of test), {100 * c['gain_near_clean']:+.1f} beside clean ones")
        lines.append(line)
    if lines:
        lines.insert(0, f"cells above {100 * threshold:g} pt, largest gain first, and where their gain is:")
    return lines


def widths_summary(cfg: NegativeConfig, results: list[dict], reference: dict | None) -> list[dict]:
    """Per width: the grid's summary (cells within 1 point, median and max gain), the cells' mean
    training accuracy, and the multi-view contrast's gains at that width."""
    out = []
    for i, w in enumerate(cfg.widths):
        cells = [r for r in results if r["width"] == w]
        entry = {"width": w, **summarise(cells), "train_acc_mean": float(np.mean([r["train_acc_mean"] for r in cells])),
                 "gains": [r["gain"] for r in cells], "cell_names": [_cell_name(r["cell"]) for r in cells]}
        if reference is not None:
            mv = reference["by_width"][i]
            entry["multiview_gain_single_view"] = mv["single_view_acc"]["gain"]
            entry["multiview_gain_test"] = mv["test_acc"]["gain"]
            entry["multiview_single_test_acc"] = mv["test_acc"]["individual_mean"]
        out.append(entry)
    return out


def format_widths(by_width: list[dict]) -> str:
    lines = ["by width: cells within 1 point, median gain, max gain (pts); multi-view gain on single-view samples"]
    for e in by_width:
        mv = (f"; multi-view {100 * e['multiview_gain_single_view']:+.2f} (its single models' test accuracy "
              f"{e['multiview_single_test_acc']:.3f})" if "multiview_gain_single_view" in e else "")
        lines.append(f"  width {e['width']:5d}: {e['fraction_at_or_below_threshold']:.0%} of {e['cells']}, "
                     f"median {100 * e['median_gain']:+.2f}, max {100 * e['max_gain']:+.2f}{mv}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
