"""Ensemble, knowledge distillation, self-distillation and training the average on multi-view data.

The main experiment of the project (Allen-Zhu & Li, arXiv 2012.09816, on the synthetic data of
their theory). One run:

1. draws a multi-view world, a training set, and two test sets from the same world: multi-view
   samples (every view present) and single-view samples (exactly one view present);
2. trains ``--seeds`` single models from different random inits (stacked, in one call) to
   convergence: each until it has trained 3 times as long as it took to fit its training set and
   its cross-entropy is at most 0.01 (``--stop``, ``--fit-multiple``, ``--loss-target``), keeping
   what it had learned at 1x and 3x its fit step;
3. scores every seed and their ensemble (the average of the models' logits F);
4. distils the ensemble into ``--students`` fresh models (KD) and seed s into a fresh seed (self-KD,
   s < students), each student until its loss reaches a plateau (``--kd-stop``), trains the average
   of ``--seeds`` models jointly, and ensembles the KD students; as controls, trains the students'
   seeds on the labels alone for as many steps as the students (what KD adds beyond training
   longer), one single model with ``--seeds`` times the neurons (as wide as the average: the
   paper's reason why training the average does not help), and the average's members as their sum;
5. repeats 2-4 with random features (first layer frozen at init, linear read-out trained) and,
   with ``--ntk``, with the network linearised around its init;
6. prints a table, which of the paper's predictions hold (with their margins) and what the single
   models had learned along training, and writes a run folder: config.json, results.json, CSV
   tables, figures.

Example::

    python -m theory_sims.view_learning --views 2 --missing 0.1
    python -m theory_sims.view_learning --preset large --out runs/large
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import theory_sims  # noqa: F401  (sets the BLAS thread spin before numpy work starts)
from multiview import MultiViewConfig, MultiViewDistribution
from multiview.checks import check_choice, check_int
from multiview.cli import Parser, add_config_flags, as_flag, given, progress_bars, refuse_inert, require_cuda
from multiview.multiview import expected_single_fraction
from theory_sims import experiments as ex
from theory_sims import mechanism
from theory_sims.backends import resolve_products
from theory_sims.config import AUGMENTS, PRODUCTS, LearnerConfig, TrainConfig
from theory_sims.losses import KD_LOSSES
from theory_sims.stats import ensemble_output
from theory_sims.tracking import learned_step, noise_memorisation, second_views
from theory_sims.tracking import views_learned as lambda_views

# The regime, found by the regime search in the race's regime (python -m theory_sims.search;
# docs/theory.md, "The race's regime search"): trial 94 of docs/search_race_wide, the best of its
# 60 finished trials on data seeds 0-4, its values to 3 significant digits; run on held-out seeds
# 100-104 it holds the ensemble and self-KD theorems on 5 of 5 and KD and the single-model theorem
# on some (docs/theory.md). d = 640 with the noise's norm per patch 1.27 (noise_std 0.0503): loud
# enough that a single-view training sample whose view a model lacks is memorised through its noise.
# P = 32 patches and 150 training samples. Other-class features weigh U[0.2, 0.4] in multi-view
# samples and U[0.025, 0.05] (Gamma) in single-view ones, every patch carries feature noise
# U[0, 0.01] of every feature (gamma).
DEFAULT_DATA = MultiViewConfig(
    k=10, views=2, d=640, patches=32, feature_patches=2, missing=0.1, rho=0.02,
    other_features=3, other_weight_multi=0.4, other_weight_single=0.05, feature_noise=0.01, noise_std=0.0503,
)
# m = 3 neurons per class (about log k, the low end of the paper's [polylog k, k]), q = 5. varrho is
# 32 times the expected initial Lambda (sigma0 times the mean largest of m standard normals,
# search.init_lambda): the race between a class's views runs in the power phase, where the init's
# lead compounds, and ends there (docs/theory.md, "The race between a class's views").
DEFAULT_LEARNER = LearnerConfig(k=10, m=3, q=5, varrho=2.85, sigma0=0.106)
# Single models are trained to convergence: each stops once it has trained 3 times as long as it
# took to fit its training set and its cross-entropy is at most 0.01; what it had learned at 1x
# and 3x its fit step is kept. Steps are capped at length 4 (gradient-norm clipping). At lr 105 the
# training follows gradient flow: halving it leaves the views used (--check-lr).
DEFAULT_TRAIN = TrainConfig(lr=105.0, steps=3000, max_step=4.0, stop="converge", fit_multiple=3.0,
                            loss_target=0.01, snapshots=(1.0, 3.0), track_every=2)
# Distillation: Hinton's KD at temperature 16.8 on the teacher alone (no label term), the teacher's
# logits scaled by 6.64 (the paper's G is the ensemble's output scaled by a constant): once single
# models use one view per class, the ensemble's knowledge of a class's other view lives in its
# non-target logits, which a high temperature and a scaled teacher carry. Each student trains to a
# plateau of its loss: at least twice its fit step, then until the loss falls by less than 0.583%
# over 50 steps (at most 2000 steps). The paper's one-sided objective (--kd-loss kd_paper) makes the
# students' logits grow without bound here (see docs/theory.md, "The paper's KD objective, run").
# Steps capped at length 4 as above.
DEFAULT_DISTILL = TrainConfig(lr=1440.0, steps=2000, max_step=4.0, loss="kd", temperature=16.8, teacher_scale=6.64,
                              label_weight=0.0, track_every=5, stop="converge", fit_multiple=2.0, loss_target=1e-4,
                              plateau=0.00583, plateau_window=50)
DEFAULT_RF = TrainConfig(lr=20.0, steps=300, track_every=0)
# The linearised network's gradient carries sReLU'(<w0, x>) ~ (sigma0 / varrho)^(q-1), about 1e-4 to
# 1e-3 at the defaults, hence the large learning rate.
DEFAULT_NTK = TrainConfig(lr=10000.0, steps=100, track_every=0)


@dataclass(frozen=True)
class ViewLearningConfig:
    """Everything one run depends on; serialised to config.json."""

    data: MultiViewConfig = DEFAULT_DATA
    learner: LearnerConfig = DEFAULT_LEARNER
    train: TrainConfig = DEFAULT_TRAIN
    distill: TrainConfig = DEFAULT_DISTILL
    rf_train: TrainConfig = DEFAULT_RF
    ntk_train: TrainConfig = DEFAULT_NTK
    n_train: int = 150  # the regime search's (see DEFAULT_DATA)
    n_test: int = 1000
    seeds: int = 10
    students: int = 5
    seed: int = 0
    random_features: bool = True
    ntk: bool = False
    controls: bool = True  # the students' seeds on labels alone, and one model as wide as the average
    average: bool = True  # train the average of the single models (an observation, judged by no theorem)
    # Train the single models again at half the learning rate (and half the step cap, for twice the
    # steps): does the race's outcome move? It should not where training follows gradient flow.
    check_lr: bool = False
    # Single models trained with an augmentation ('none': not run), beside the plain ones: does
    # removing part of each input at every step make one model learn more views? (TrainConfig.augment)
    augment: str = "none"
    augment_rate: float = 0.5

    def __post_init__(self):
        check_int("n_train", self.n_train, self.data.k)  # a training sample of every class at least
        if not expected_single_fraction(self.data) > 0:
            raise ValueError(f"missing must be > 0 here: the statements are judged in units of mu, the fraction of "
                             f"single-view data it sets, got {self.data.missing:g}")
        check_int("n_test", self.n_test, 1)
        check_int("seeds", self.seeds, 2)  # an ensemble and a trained average need two models
        check_int("students", self.students, 1, self.seeds)
        check_int("seed", self.seed, 0)
        if self.learner.k != self.data.k:
            raise ValueError(f"learner k must equal the data's k={self.data.k}, got {self.learner.k}")
        if self.distill.loss not in KD_LOSSES:
            raise ValueError(f"distill loss must be one of {', '.join(map(repr, KD_LOSSES))}, got {self.distill.loss!r}")
        for part in ("train", "distill", "rf_train", "ntk_train"):  # untrained models have no verdict
            check_int(f"{part}.steps", getattr(self, part).steps, 1)
        self.augmented_train()  # the augmentation's settings are checked where they act

    def augmented_train(self) -> TrainConfig:
        """How the augmented single models train: as the single models, with the augmentation."""
        return dataclasses.replace(self.train, augment=self.augment, augment_rate=self.augment_rate)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The config's parts, each a dataclass of its own (presets and overrides take dicts of their fields).
PARTS = ("data", "learner", "train", "distill", "rf_train", "ntk_train")

PRESETS = {
    "default": {},
    # Closer to the theory: P = k^2 = 100 patches, larger d, more samples; about 4 minutes here.
    "large": dict(data=dict(d=400, patches=100, noise_std=0.05), n_train=600, n_test=2000),
}


def configure(preset: str = "default", **overrides) -> ViewLearningConfig:
    """A config from a preset and overrides; nested parts take dicts of their fields."""
    check_choice("preset", preset, PRESETS)
    spec = {**PRESETS[preset]}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    base = ViewLearningConfig()
    parts = {}
    for name in PARTS:
        parts[name] = dataclasses.replace(getattr(base, name), **spec.pop(name, {}))
    if parts["data"].k != parts["learner"].k:
        parts["learner"] = dataclasses.replace(parts["learner"], k=parts["data"].k)
    return ViewLearningConfig(**parts, **spec)


def control_config(cfg: ViewLearningConfig, steps: int) -> TrainConfig:
    """The control for distillation: the students' seeds trained on the labels alone, as long as
    the longest student (``steps``) and on the same schedule (learning rate, step cap), so that what
    distillation adds is not mistaken for what longer training adds. It is also the students' own
    init's lottery: the views a student's seed learns without a teacher."""
    d = cfg.distill
    return dataclasses.replace(cfg.train, stop="steps", steps=steps, lr=d.lr, max_step=d.max_step, snapshots=())


def check_memory(cfg: ViewLearningConfig) -> None:
    """Refuse, before any folder is made, a run whose data alone need more memory than is
    available: the training set and the four test sets (inputs and per-patch feature weights)
    and the training pre-activations of the widest stack, a lower bound on what the run needs."""
    from multiview.generate import available_memory, bytes_needed

    c, ln = cfg.data, cfg.learner
    need = (bytes_needed(c, cfg.n_train) + 4 * bytes_needed(c, cfg.n_test)
            + cfg.n_train * c.patches * cfg.seeds * ln.k * ln.m * 4)
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(f"--n-train {cfg.n_train} with --n-test {cfg.n_test} needs at least {need / 2**30:.1f} GiB "
                         f"for its data, more than the {have / 2**30:.1f} GiB of memory available; "
                         "ask for fewer samples (or a smaller --d, --patches or --seeds)")


def make_data(cfg: ViewLearningConfig) -> tuple:
    """The run's training set and its test sets (multi-view, single-view, the single-view samples
    without their Gaussian noise, and noise-only inputs), all from one world."""
    world = MultiViewDistribution(cfg.data, seed=cfg.seed)
    train_set = world.sample(cfg.n_train, seed=cfg.seed + 1)
    single = world.variant(missing=1.0, missing_mode="single").sample(cfg.n_test, seed=cfg.seed + 3)
    c = cfg.data
    noise = np.random.default_rng(cfg.seed + 4).standard_normal((cfg.n_test, c.patches, c.d), dtype=np.float32)
    tests = ex.TestSets(
        multi=world.variant(missing=0.0).sample(cfg.n_test, seed=cfg.seed + 2),
        single=single,
        mu=expected_single_fraction(cfg.data),
        single_clean=without_noise(single),
        noise_only=noise * np.float32(c.noise_std),
    )
    return train_set, tests


def without_noise(data):
    """The samples of ``data`` with their Gaussian noise removed (features and feature noise kept)."""
    return dataclasses.replace(data, X=data.X - data.noise)


class Stages:
    """Trains a stage (``ex.fit``) or, with a folder, reads it back from ``folder/<name>.pt`` where
    an earlier (killed) run of the same config finished it; every trained stage is saved there
    atomically, so ``--resume`` skips what was done and gives what the uninterrupted run gives."""

    def __init__(self, folder=None, progress: bool = False, log=print):
        self.folder = None if folder is None else Path(folder)
        self.progress, self.log = progress, log
        self.loaded: list[str] = []
        self.earlier_s = 0.0  # what the stages read back took to train in the process that trained them

    def earlier_work(self) -> dict:
        """The stages read back and what they took to train where they were trained (as
        :func:`theory_sims.cluster.earlier_work` says of jobs)."""
        return {"jobs": len(self.loaded), "wall_s": self.earlier_s}

    def fit(self, name: str, train_set, seeds, learner, cfg, teacher=None):
        if self.folder is None:
            return ex.fit(train_set, seeds, learner, cfg, teacher=teacher, progress=self.progress)
        import torch

        path = self.folder / f"{name}.pt"
        made_by = stage_fingerprint(train_set, seeds, learner, cfg, teacher)
        if path.exists():
            try:  # the run's own file; a truncated or foreign one is trained again, not trusted
                saved = torch.load(path, weights_only=False)
            except Exception as err:  # noqa: BLE001 (torch.load raises many kinds on a bad file)
                saved = err
            if not (isinstance(saved, dict) and isinstance(saved.get("stage"), ex.TrainResult)):
                self.log(f"  {path}: not a finished stage ({type(saved).__name__}); training it again")
            elif saved.get("made_by", made_by) != made_by:  # files from before fingerprints carry none
                self.log(f"  {path}: trained on other data, seeds or settings than this run's; training it again")
            else:
                self.loaded.append(name)
                self.earlier_s += float(saved.get("wall_s", 0.0))
                return saved["stage"]
        t0 = time.perf_counter()
        result = ex.fit(train_set, seeds, learner, cfg, teacher=teacher, progress=self.progress)
        from theory_sims.results import write_atomic

        buf = io.BytesIO()
        torch.save({"stage": result, "wall_s": time.perf_counter() - t0, "made_by": made_by}, buf)
        write_atomic(path, buf.getvalue())
        return result


def stage_fingerprint(train_set, seeds, learner: LearnerConfig, cfg: TrainConfig, teacher=None) -> str:
    """SHA-256 of everything a stage's result depends on: the training set's inputs and labels, the
    model seeds, the learner, the training settings and the teacher's outputs. A stage file read
    back by ``--resume`` must carry the fingerprint of the stage asked for."""
    from theory_sims.results import as_json

    h = hashlib.sha256()
    settings = {"seeds": [int(s) for s in seeds], "learner": dataclasses.asdict(learner),
                "train": dataclasses.asdict(cfg), "products": resolve_products(cfg.products, cfg.backend, cfg.dtype)}
    h.update(json.dumps(as_json(settings), sort_keys=True).encode())
    for array in (train_set.X, train_set.y, teacher):
        if array is not None:
            a = np.ascontiguousarray(array)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Family:
    """One learner's experiment: which learner, how its single models and students train, where
    its rows go in the results, and whether the views it uses are measured (the full learner)."""

    learner: LearnerConfig
    train: TrainConfig
    distill: TrainConfig
    out: dict
    prefix: str = ""
    views: bool = True
    trained: dict = field(default_factory=dict)  # its trained stacks, by stage name
    teacher: np.ndarray | None = None  # the single models' logits on the training inputs (S, n, k)


class Run:
    """One run of the experiment: its data and evaluator, the trained stacks, and ``results``,
    which each stage fills in turn (see :func:`run` for the order). The report and the figures
    read ``results``; the trained stacks stay in ``models``."""

    def __init__(self, cfg: ViewLearningConfig, stages_dir=None, progress: bool = False, log=print):
        self.cfg, self.log = cfg, log
        self.train_set, self.tests = make_data(cfg)
        self.ev = ex.Evaluator(self.train_set, self.tests, cfg.train.backend, cfg.train.device)
        self.stages = Stages(stages_dir, progress, log)
        self.seeds = list(range(cfg.seed * 1000, cfg.seed * 1000 + cfg.seeds))
        self.fresh = [s + 500 for s in self.seeds]  # students' inits: never a teacher's
        # what the report needs to judge the rows: k (the tolerance) and mu (the error's unit)
        # and the precision the training products ran in here (products='auto' depends on the CPU)
        ran = {part: resolve_products(c.products, c.backend, c.dtype) for part, c in (("train", cfg.train), ("distill", cfg.distill))}
        self.results: dict = {"setting": {"k": cfg.data.k, "views": cfg.data.views, "mu": self.tests.mu,
                                          "products": ran}, "timing_s": {}}
        self.full = Family(cfg.learner, cfg.train, cfg.distill, out=self.results)
        self.models = self.full.trained  # the full learner's trained stacks, by stage name
        self._t0 = self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        """Record the time since the last lap as stage ``name``'s."""
        now = time.perf_counter()
        self.results["timing_s"][name] = now - self._clock
        self._clock = now
        self.log(f"  {name}: {self.results['timing_s'][name]:.1f} s")

    # --- rows

    def stack_row(self, fam: Family, result) -> dict:
        """Scores of every model of a trained stack (lists over the models), training accuracy and
        fit step; for the full learner also the views each uses, its final Lambda, the views Lambda
        counts as learned and when each crossed (tracking's threshold)."""
        row = self.ev.models(result, views=fam.views)
        row["train_acc"] = result.train_acc.tolist()
        row["fit_step"] = result.fit_step.tolist()  # first step at 100% training accuracy, -1 if never
        if fam.views:
            varrho = fam.learner.varrho
            row["lambda"] = result.history["lambda"][-1]
            row["lambda_learned"] = lambda_views(row["lambda"], varrho)
            # When Lambda first crossed the threshold (-1 never), and whether a class's extra views
            # crossed before the model fitted its training set.
            row["learned_step"] = learned_step(result.history["step"], result.history["lambda"], varrho)
            row["second_views"] = second_views(row["learned_step"], result.fit_step)
        return row

    def ensemble_row(self, fam: Family, result) -> dict:
        """Scores of the average of a stack's outputs (the ensemble, or the trained average)."""
        return self.ev.ensemble(result, views=fam.views)

    def group_row(self, fam: Family, result) -> dict:
        """The row of a stack trained as one network (its mean or its sum: the same argmax): the
        scores of its output, and its training accuracy and fit step, which every member holds."""
        row = self.ensemble_row(fam, result)
        row["train_acc"] = [float(result.train_acc[0])]
        row["fit_step"] = [int(result.fit_step[0])]
        return row

    def fit(self, fam: Family, name: str, seeds, learner=None, cfg=None, teacher=None):
        result = self.stages.fit(fam.prefix + name, self.train_set, seeds, learner or fam.learner, cfg or fam.train,
                                 teacher=teacher)
        fam.trained[name] = result
        return result

    # --- the stages, in the order :func:`run` calls them

    def single_models(self, fam: Family) -> None:
        """``--seeds`` single models from different inits, trained to the stop rule; for the full
        learner also what they had learned at each multiple of their fit step."""
        single = self.fit(fam, "single", self.seeds)
        fam.out["individual"] = self.stack_row(fam, single)
        if fam.views and single.snapshots:
            fam.out["individual"]["by_length"] = self.by_length(single)
        fam.teacher = self.ev.train_logits(single)  # (S, n, k): the students' teachers

    def ensemble(self, fam: Family) -> None:
        """The average of the single models' logits."""
        fam.out["ensemble"] = self.ensemble_row(fam, fam.trained["single"])

    def students(self, fam: Family) -> None:
        """KD students of the ensemble, their ensemble, and self-KD students (student s of single model s)."""
        K = self.cfg.students
        kd = self.fit(fam, "kd", self.fresh[:K], cfg=fam.distill, teacher=ensemble_output(fam.teacher))
        fam.out["kd"] = self.stack_row(fam, kd)
        fam.out["kd_ensemble"] = self.ensemble_row(fam, kd)
        self_kd = self.fit(fam, "self_kd", self.fresh[:K], cfg=fam.distill, teacher=fam.teacher[:K])
        fam.out["self_kd"] = self.stack_row(fam, self_kd)

    def augmented(self) -> None:
        """``--seeds`` single models (the single models' seeds) trained with ``--augment``: the views
        they learn, their accuracies, and their ensemble."""
        fam = self.full
        result = self.fit(fam, "augmented", self.seeds, cfg=self.cfg.augmented_train())
        self.results["setting"]["augment"] = self.cfg.augment
        self.results["augmented"] = self.stack_row(fam, result)
        self.results["augmented_ensemble"] = self.ensemble_row(fam, result)

    def average(self, fam: Family) -> None:
        """``--seeds`` models trained jointly on the loss of their mean output: one network of
        seeds x m neurons per class, so the views it uses are those of its output."""
        cfg = dataclasses.replace(fam.train, loss="average", group_size=self.cfg.seeds, snapshots=())
        average = self.fit(fam, "average", self.seeds, cfg=cfg)
        row = self.group_row(fam, average)
        if fam.views:  # Lambda of the whole network: the max over every member's neurons
            row["lambda"] = np.asarray(average.history["lambda"][-1]).max(axis=0, keepdims=True)  # (1, k, V)
            row["lambda_learned"] = lambda_views(row["lambda"], fam.learner.varrho)
        fam.out["average"] = row

    def lr_check(self) -> None:
        """The single models' seeds trained again at half the learning rate and half the step cap
        (so twice the steps): the views they use, beside the single models'. Where the training
        follows gradient flow the race ends the same way."""
        fam, c = self.full, self.cfg.train
        half = dataclasses.replace(c, lr=c.lr / 2, max_step=c.max_step / 2, steps=2 * c.steps, snapshots=())
        row = self.stack_row(fam, self.fit(fam, "single_half_lr", self.seeds, cfg=half))
        base = self.results["individual"]
        per_class = lambda r: np.asarray(r["views_used"]).sum(-1).mean(-1)  # noqa: E731  (S,) views per class
        self.results["lr_check"] = {
            "lr": c.lr, "half_lr": half.lr,
            "views_per_class": float(per_class(base).mean()), "half_lr_views_per_class": float(per_class(row).mean()),
            "single_view_acc": float(np.mean(base["single_view_acc"])),
            "half_lr_single_view_acc": float(np.mean(row["single_view_acc"])),
            "same_views": float((np.asarray(base["views_used"]) == np.asarray(row["views_used"])).all(-1).mean()),
            "fit_step": base["fit_step"], "half_lr_fit_step": row["fit_step"],
        }

    def family(self, fam: Family, average: bool = True, lap=lambda name: None) -> None:
        """One learner's experiment, the stages above in order: single models, their ensemble, the
        students, and (with ``average``) the trained average; ``lap(name)`` after each that trains."""
        self.single_models(fam)
        lap("single")
        self.ensemble(fam)
        self.students(fam)
        lap("students")
        if average:
            self.average(fam)
            lap("average")

    def controls(self) -> None:
        """Three controls of the full learner: the students' seeds trained on the labels alone as long
        as the students (what KD adds beyond training; also the views each student's own init
        favours), one single model with ``--seeds`` times the neurons (as wide as the average: the
        paper's reason why training the average does not help), and the average's members trained
        as one network whose output is their sum (the average without its 1/seeds)."""
        fam = self.full
        steps = int(max(self.models["kd"].updates.max(), self.models["self_kd"].updates.max(), 1))
        long = self.fit(fam, "long_single", self.fresh[:self.cfg.students], cfg=control_config(self.cfg, steps))
        self.results["long_single"] = self.stack_row(fam, long)
        wide_learner = dataclasses.replace(fam.learner, m=fam.learner.m * self.cfg.seeds)
        wide = self.fit(fam, "wide_single", self.seeds[:1], learner=wide_learner)
        self.results["wide_single"] = self.stack_row(fam, wide)
        # Why the trained average learns more views than its members: its output is 1/seeds of the
        # members' sum, so its loss stays high longer. The same members (same inits) trained as one
        # network whose output is their sum, with the lr divided by seeds so that each member moves
        # as far per unit of gradient as in the average: only the output's scale differs.
        S = self.cfg.seeds
        sum_cfg = dataclasses.replace(fam.train, loss="sum", group_size=S, snapshots=(), lr=fam.train.lr / S)
        self.results["sum_single"] = self.group_row(fam, self.fit(fam, "sum_single", self.seeds, cfg=sum_cfg))

    def mechanism(self) -> None:
        """What decided the results: the init's lottery, what the students inherit, how the
        single-view training samples are fitted, and what noise alone makes the models say."""
        r, K = self.results, self.cfg.students
        used = {key: np.asarray(r[key]["views_used"]) for key in ("individual", "kd", "self_kd", "long_single")
                if key in r}
        varrho = self.cfg.learner.varrho
        out = {"calibration": mechanism.lambda_calibration(r["individual"]["lambda"], r["individual"]["view_acc"],
                                                          varrho)}
        hist = self.models["single"].history
        if len(hist["step"]) and hist["step"][0] == 0:
            out["lambda_init"] = hist["lambda"][0]
            out["lottery"] = mechanism.init_lottery(hist["lambda"][0], used["individual"])
        out["kd_inheritance"] = mechanism.kd_inheritance(used["individual"], used["kd"])
        out["kd_inheritance"]["ensemble_views"] = float(np.mean(r["ensemble"]["views_used"]))
        if "long_single" in used:  # the students' own inits, read off the control
            out["self_kd_inheritance"] = mechanism.self_kd_inheritance(used["individual"][:K], used["long_single"],
                                                                       used["self_kd"])
        out["memorisation"], out["single_view_samples"] = self.memorisation(used["individual"])
        out["race"] = mechanism.race(hist["step"], hist["lambda"], varrho, self.models["single"].fit_step,
                                     used["individual"])
        noise = self.tests.noise_only
        if noise is not None:
            out["noise_response"] = {key: mechanism.noise_response(self.ev.on(self.models[name].model, noise))
                                     for key, name in (("individual", "single"), ("kd", "kd"), ("self_kd", "self_kd"))}
        r["mechanism"] = out

    # --- helpers of the stages

    def memorisation(self, used: np.ndarray) -> tuple[dict, dict]:
        """How the single models fit the single-view training samples: through the view they show,
        or, where the model does not use it, through the samples' own noise (overall, and per
        (class, view) of the samples)."""
        import torch

        data, model = self.train_set, self.models["single"].model
        single = ~data.is_multi
        shown = data.views_present.argmax(axis=1)  # the one view a single-view sample shows
        sample_used = used[:, data.y, shown]  # (S, n)
        correct = self.full.teacher.argmax(-1) == data.y
        noise = data.noise  # derived from X: computed once here
        clean = self.ev.on(model, data.X - noise).argmax(-1) == data.y
        W = model.weights
        stored = noise_memorisation(W, torch.as_tensor(noise, dtype=W.dtype), torch.as_tensor(data.y)).numpy()
        return (mechanism.memorisation(correct, clean, stored, sample_used, single),
                mechanism.single_view_samples(data.y, shown, single, correct, clean, sample_used, self.cfg.data.k,
                                              self.cfg.data.views))

    def by_length(self, result) -> dict:
        """What the models of a stack had learned at each multiple of their own fit step that the
        training kept (``TrainConfig.snapshots``): {"3x": {step, views_per_class, views_used,
        single_view_acc, multi_view_acc, ...}}, each a list over the models (means alongside)."""
        out = {}
        for mult, (_, steps) in result.snapshots.items():
            row = self.ev.model_row(self.ev.model_logits(result.snapshot_model(mult)), views=True)
            row.update(step=steps.tolist(), views_per_class=row["views_used"].sum(axis=-1).mean(axis=-1).tolist())
            row.update({f"mean_{k}": float(np.mean(row[k])) for k in ("single_view_acc", "multi_view_acc", "views_per_class")})
            out[f"{mult:g}x"] = row
        return out

    def frozen_families(self) -> None:
        """The experiment again with learners whose features do not move, each when its config flag
        (named like the mode) is on."""
        for mode, train_name in FROZEN_FAMILIES:
            if not getattr(self.cfg, mode):
                continue
            d = self.cfg.distill
            train_cfg = getattr(self.cfg, train_name)
            distill = dataclasses.replace(train_cfg, stop="steps", snapshots=(), loss=d.loss, temperature=d.temperature,
                                          label_weight=d.label_weight, kd_weight=d.kd_weight,
                                          teacher_scale=d.teacher_scale)
            self.results[mode] = {}
            self.family(Family(dataclasses.replace(self.cfg.learner, mode=mode), train_cfg, distill,
                               out=self.results[mode], prefix=mode + "-", views=False))
            self.lap(mode)

    def finish(self) -> None:
        self.results["timing_s"]["total"] = time.perf_counter() - self._t0
        self.results["timing_s"]["earlier_processes"] = self.stages.earlier_work()
        if self.stages.loaded:
            self.log(f"  read back {len(self.stages.loaded)} finished stages: {', '.join(self.stages.loaded)}")


def run(cfg: ViewLearningConfig, progress: bool = False, log=print, stages_dir=None) -> tuple[dict, Run]:
    """Run the whole experiment, stage by stage. Returns (results, the Run: trained stacks and
    data for figures). With ``stages_dir`` every trained stage is kept there and a stage found
    there is read instead of trained (see :class:`Stages`)."""
    c = cfg.data
    r = Run(cfg, stages_dir, progress, log)
    log(f"single models: {cfg.seeds} seeds, n={cfg.n_train}, k={c.k}, V={c.views}, missing={c.missing}")
    r.family(r.full, average=cfg.average, lap=r.lap)
    if cfg.check_lr:
        r.lr_check()
        r.lap("lr_check")
    if cfg.augment != "none":
        r.augmented()
        r.lap("augmented")
    if cfg.controls:
        r.controls()
        r.lap("controls")
    r.mechanism()
    r.lap("mechanism")
    r.frozen_families()
    r.finish()
    return r.results, r


# The same experiment for learners whose features do not move, each run when its config flag
# (named like the mode) is on: (mode and results key, name of its TrainConfig).
FROZEN_FAMILIES = (
    ("random_features", "rf_train"),  # first layer frozen at init
    ("ntk", "ntk_train"),  # the network linearised around its init
)


# ----------------------------------------------------------------------------- command line

EXPERIMENT_FLAGS = {
    "n_train": (int, "training samples"),
    "n_test": (int, "samples in each test set (multi-view and single-view)"),
    "seeds": (int, "single models trained from different inits (also the size of the ensemble and the average)"),
    "students": (int, "KD students, and seeds distilled into fresh seeds (self-KD); at most --seeds"),
    "seed": (int, "world and data seed; model seeds derive from it"),
    "augment_rate": (float, "--augment drop_patches: the probability that a patch is zeroed at a step"),
}


STOP_FIELDS = ("stop", "fit_multiple", "loss_target", "plateau", "plateau_window")


def add_stop_flags(group, prefix: str, cfg: TrainConfig, choices: tuple, other: str = "") -> None:
    """The stop rule's flags of one part (``prefix`` '' for the single models, 'kd-' for the
    students): --stop and the 'converge' rule's fit multiple, loss target and plateau."""
    f = lambda name: f"--{prefix}{name}"  # noqa: E731
    group.add_argument(f("stop"), choices=choices, default=None,
                       help=f"'converge': each model trains until it has trained {f('fit-multiple')} times its fit step "
                            f"and its loss is at most {f('loss-target')} or, with {f('plateau')} above 0, fell by less "
                            f"than that fraction over the last {f('plateau-window')} steps; {other}'steps': "
                            f"{f('steps')} steps (default: {cfg.stop})")
    converge = f"{f('stop')} converge"
    group.add_argument(f("fit-multiple"), type=float, default=None,
                       help=f"{converge}: at least this many times the fit step (default: {cfg.fit_multiple:g})")
    group.add_argument(f("loss-target"), type=float, default=None,
                       help=f"{converge}: a loss at most this (default: {cfg.loss_target:g})")
    group.add_argument(f("plateau"), type=float, default=None,
                       help=f"{converge}: or a loss that fell by less than this fraction over the window; 0: off "
                            f"(default: {cfg.plateau:g})")
    group.add_argument(f("plateau-window"), type=int, default=None,
                       help=f"{converge}: the window's steps (default: {cfg.plateau_window})")


def stop_values(args, prefix: str) -> dict:
    """The stop-rule fields a part's flags (:func:`add_stop_flags`) set."""
    return {name: getattr(args, prefix.replace("-", "_") + name) for name in STOP_FIELDS}


def stop_inert_flags(prefix: str, part: str) -> tuple:
    """:data:`INERT_FLAGS` entries of a part's stop-rule flags."""
    dest = prefix.replace("-", "_")
    converge = lambda c: getattr(c, part).stop == "converge"  # noqa: E731
    unless = f"unless --{prefix}stop converge"
    return tuple((f"--{prefix}{name.replace('_', '-')}", dest + name, converge, unless)
                 for name in ("fit_multiple", "loss_target", "plateau")) + (
        (f"--{prefix}plateau-window", dest + "plateau_window",
         lambda c: converge(c) and getattr(c, part).plateau > 0, f"{unless} with --{prefix}plateau above 0"),)


def build_parser() -> Parser:
    p = Parser(prog="python -m theory_sims.view_learning", description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="starting point for every other flag (default: default; 'large' is closer to the theory)")
    p.add_argument("--config", default=None, metavar="RUN",
                   help="start from the settings of an earlier run instead of a preset: RUN is its folder or its "
                        "config.json; flags given beside it override those settings (the same flags re-create the "
                        "run: its results.json equals the original's but for timings)")
    p.add_argument("--out", default=None,
                   help="run folder (default: runs/view_learning-<time>); one that holds another run is refused")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue the run in folder RUN, given with the same flags as when it started: stages it "
                        "finished (RUN/stages/) are read back, the others trained; the result is the uninterrupted "
                        "run's")
    p.add_argument("--backend", choices=("numba", "torch"), default=None,
                   help="trainer backend (default: numba, or torch with --device cuda)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="device of the torch backend (default: cpu)")
    p.add_argument("--products", choices=PRODUCTS, default=None,
                   help="precision of the training steps' two matrix products: 'bfloat16' rounds both factors to "
                        "bfloat16 (on one thread; weights, the rest of the step and every evaluation stay float32), "
                        "2-4x faster products on processors with AMX; 'auto': bfloat16 where the CPU has AMX-BF16 "
                        "and the backend is numba, float32 elsewhere; results.json's setting.products says which ran "
                        f"(docs/performance.md has the evidence) (default: {DEFAULT_TRAIN.products})")
    p.add_argument("--no-random-features", action="store_true", help="skip the random-feature rows")
    p.add_argument("--no-controls", action="store_true",
                   help="skip the controls (the students' seeds on labels alone, one model as wide as the average, the "
                        "average's members trained as their sum); their rows and the self-KD inheritance line go")
    p.add_argument("--no-average", action="store_true",
                   help="skip training the average of the single models (an observation no theorem judges; the "
                        "random features' cheap average stays; the regime search and long sweeps along k leave it out)")
    p.add_argument("--check-lr", action="store_true",
                   help="also train the single models at half the learning rate and half the step cap (twice the "
                        "steps) and report whether the views they use move: they should not where training follows "
                        "gradient flow (about as long again as the single models' stage)")
    p.add_argument("--ntk", action="store_true",
                   help="also run the network linearised around its init (NTK rows; about 15 s more at the defaults)")
    p.add_argument("--augment", choices=AUGMENTS, default=None,
                   help="also train the single models' seeds with an augmentation and report them beside the single "
                        "models: 'drop_view' removes, at every step, the patches of one of each sample's views (drawn "
                        "at random: a crop in patch space); 'drop_patches' zeroes each patch with probability "
                        "--augment-rate (about as long as the single models' stage; default: none)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars are drawn only on a terminal; elsewhere, e.g. in a log, the "
                        "run prints one line per stage)")
    g = p.add_argument_group("experiment")
    for name, (kind, text) in EXPERIMENT_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
                       help=f"{text} (default: {getattr(ViewLearningConfig(), name)})")
    # the defaults shown are the experiment's (DEFAULT_DATA, DEFAULT_LEARNER), not the dataclasses'
    data_flags = add_config_flags(p.add_argument_group("data (multiview)"), MultiViewConfig, defaults=DEFAULT_DATA)
    learner_flags = add_config_flags(p.add_argument_group("learner"), LearnerConfig, skip=("k", "mode"),
                                     defaults=DEFAULT_LEARNER)
    t = p.add_argument_group("training of the single models")
    t.add_argument("--lr", type=float, default=None, help=f"learning rate (default: {DEFAULT_TRAIN.lr})")
    t.add_argument("--steps", type=int, default=None, help=f"most steps (default: {DEFAULT_TRAIN.steps})")
    add_stop_flags(t, "", DEFAULT_TRAIN, ("converge", "fit", "steps"),
                   "'fit': --extra-steps after 100%% training accuracy; ")
    t.add_argument("--max-step", type=float, default=None,
                   help=f"longest step a model may take, L2 norm over its weights; 0: no cap (default: {DEFAULT_TRAIN.max_step:g})")
    t.add_argument("--extra-steps", type=int, default=None,
                   help=f"--stop fit: steps after 100%% train accuracy (default: {DEFAULT_TRAIN.extra_steps})")
    d = p.add_argument_group("distillation (KD and self-KD students)")
    d.add_argument("--kd-loss", choices=KD_LOSSES, default=None,
                   help="'kd' (Hinton), 'kd_paper' (the paper's one-sided update on truncated scaled logits) or "
                        f"'kd_capped' (a two-sided KL on capped logits); see theory_sims.losses (default: {DEFAULT_DISTILL.loss})")
    d.add_argument("--kd-temperature", type=float, default=None,
                   help=f"T for kd; tau for kd_paper (0: the paper's 1/log^2 k) and kd_capped "
                        f"(default: {DEFAULT_DISTILL.temperature:g})")
    d.add_argument("--kd-label-weight", type=float, default=None,
                   help=f"kd, kd_capped: weight of the label term (default: {DEFAULT_DISTILL.label_weight:g})")
    d.add_argument("--kd-weight", type=float, default=None,
                   help=f"kd_paper: eta'/eta, the teacher's push against the label term (default: {DEFAULT_DISTILL.kd_weight:g})")
    d.add_argument("--kd-teacher-scale", type=float, default=None,
                   help=f"the teacher's logits are multiplied by this (the paper's G is the ensemble scaled by a "
                        f"constant) (default: {DEFAULT_DISTILL.teacher_scale:g})")
    d.add_argument("--kd-lr", type=float, default=None, help=f"learning rate (default: {DEFAULT_DISTILL.lr})")
    d.add_argument("--kd-steps", type=int, default=None,
                   help=f"most steps (all of them with --kd-stop steps) (default: {DEFAULT_DISTILL.steps})")
    add_stop_flags(d, "kd-", DEFAULT_DISTILL, ("converge", "steps"))
    d.add_argument("--kd-max-step", type=float, default=None,
                   help=f"longest step a student may take, L2 norm over its weights; 0: no cap "
                        f"(default: {DEFAULT_DISTILL.max_step:g})")
    r = p.add_argument_group("random features")
    r.add_argument("--rf-lr", type=float, default=None, help=f"read-out learning rate (default: {DEFAULT_RF.lr})")
    r.add_argument("--rf-steps", type=int, default=None, help=f"read-out steps (default: {DEFAULT_RF.steps})")
    n = p.add_argument_group("NTK (with --ntk)")
    n.add_argument("--ntk-lr", type=float, default=None, help=f"learning rate (default: {DEFAULT_NTK.lr:g})")
    n.add_argument("--ntk-steps", type=int, default=None, help=f"steps (default: {DEFAULT_NTK.steps})")
    p.set_defaults(_data=data_flags, _learner=learner_flags)
    return p


# The flag prefix of each part's fields on the command line (--kd-lr sets distill.lr).
PART_FLAGS = {"data": "", "learner": "", "train": "", "distill": "kd-", "rf_train": "rf-", "ntk_train": "ntk-"}


def config_from_args(args) -> ViewLearningConfig:
    """The config the flags describe; a bad value is a ValueError naming the flag as typed."""
    require_cuda(args.device)
    if args.device == "cuda":
        if args.backend is None:
            args.backend = "torch"
    def set_only(**values):  # the flags the user gave
        return {k: v for k, v in values.items() if v is not None}

    run_flags = set_only(backend=args.backend, device=args.device, products=args.products)
    parts = {
        "data": given(args, args._data),
        "learner": given(args, args._learner),
        "train": set_only(lr=args.lr, steps=args.steps, extra_steps=args.extra_steps, max_step=args.max_step,
                          **stop_values(args, "")),
        "distill": set_only(loss=args.kd_loss, temperature=args.kd_temperature, label_weight=args.kd_label_weight,
                            kd_weight=args.kd_weight, teacher_scale=args.kd_teacher_scale,
                            lr=args.kd_lr, steps=args.kd_steps, max_step=args.kd_max_step, **stop_values(args, "kd-")),
        "rf_train": set_only(lr=args.rf_lr, steps=args.rf_steps),
        "ntk_train": set_only(lr=args.ntk_lr, steps=args.ntk_steps),
    }
    base = ViewLearningConfig()
    # The fields each part has a flag for, so that a bound on fields not given (d >= k * views) names
    # them too; the other parts' given fields (their other fields have no flag).
    flag_fields = {"data": args._data, "learner": args._learner}
    for name, values in parts.items():  # each part alone first, so an error names the flag typed
        prefix = PART_FLAGS[name]
        if values.get("steps", 1) < 1:
            raise ValueError(f"--{prefix}steps must be an integer >= 1 (the run needs trained models), "
                             f"got {values['steps']}")
        try:
            dataclasses.replace(getattr(base, name), **values)
        except ValueError as err:
            raise ValueError(as_flag(str(err), prefix, names=flag_fields.get(name, values))) from None
    overrides = given(args, list(EXPERIMENT_FLAGS))
    if "seeds" in overrides and "students" not in overrides:  # at most as many students as seeds
        overrides["students"] = min(base.students, overrides["seeds"])
    if args.no_random_features:
        overrides["random_features"] = False
    if args.no_controls:
        overrides["controls"] = False
    if args.no_average:
        overrides["average"] = False
    if args.ntk:
        overrides["ntk"] = True
    if args.check_lr:
        overrides["check_lr"] = True
    if args.augment is not None:
        overrides["augment"] = args.augment
    for name in ("train", "distill", "rf_train", "ntk_train"):
        parts[name] = {**parts[name], **run_flags}
    start = {}
    if args.config is not None:
        if args.preset is not None:
            raise ValueError(f"--config {args.config} and --preset {args.preset}: give one starting point")
        start = read_config(args.config)
    try:
        cfg = configure(args.preset or "default", **merge_parts(start, {**parts, **overrides}))
    except ValueError as err:
        raise ValueError(as_flag(str(err), names=(*EXPERIMENT_FLAGS, "missing"))) from None
    refuse_inert(args, cfg, INERT_FLAGS)
    return cfg


def read_config(where: str) -> dict:
    """The settings of an earlier run (``--config RUN``): ``RUN/config.json`` or that file itself,
    of a view_learning run or of a sweep or search (their ``base``, the settings every run of
    theirs starts from); ValueError naming --config for a file that is missing, unreadable or
    another command's."""
    from theory_sims.results import load_config_file

    saved = load_config_file(where)
    wanted = set(ViewLearningConfig().to_dict())
    if isinstance(saved, dict) and isinstance(saved.get("base"), dict):
        saved = saved["base"]
    if not isinstance(saved, dict) or set(saved) != wanted:
        raise ValueError(f"--config {where}: not the config of a view_learning run (its sections differ from "
                         f"{', '.join(sorted(wanted))})")
    return saved


def merge_parts(start: dict, given_: dict) -> dict:
    """``start``'s settings with the flags given over them (a part's fields one by one; the
    learner's k then follows the data's, in ``configure``)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in start.items()}
    for key, value in given_.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


# Flags that act only in some modes: (flag, argparse dest, whether it acts in a config, the mode it needs).
INERT_FLAGS = (
    *stop_inert_flags("", "train"),
    ("--extra-steps", "extra_steps", lambda c: c.train.stop == "fit", "unless --stop fit"),
    ("--kd-weight", "kd_weight", lambda c: c.distill.loss == "kd_paper", "unless --kd-loss kd_paper"),
    *stop_inert_flags("kd-", "distill"),
    ("--kd-label-weight", "kd_label_weight", lambda c: c.distill.loss != "kd_paper", "with --kd-loss kd_paper"),
    ("--rf-lr", "rf_lr", lambda c: c.random_features, "with --no-random-features"),
    ("--rf-steps", "rf_steps", lambda c: c.random_features, "with --no-random-features"),
    ("--ntk-lr", "ntk_lr", lambda c: c.ntk, "without --ntk"),
    ("--ntk-steps", "ntk_steps", lambda c: c.ntk, "without --ntk"),
    ("--augment-rate", "augment_rate", lambda c: c.augment == "drop_patches", "unless --augment drop_patches"),
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        check_memory(cfg)
    except ValueError as err:
        parser.error(str(err))
    from theory_sims import figures, report
    from theory_sims.results import command_line, start_run, write_csv, write_json, write_report

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    try:
        out = start_run(args.out, args.resume, "view_learning", cfg.to_dict())
    except ValueError as err:
        parser.error(str(err))
    results, experiment = run(cfg, progress=progress_bars(args.quiet), log=log, stages_dir=out / "stages")
    results["predictions"] = report.judge(results)
    rows = report.table_rows(results)
    write_json(out / "results.json", results)
    write_csv(out / "table.csv", rows)
    write_csv(out / "per_seed.csv", report.per_seed_rows(results))
    if not args.no_figures:
        figures.view_learning_figures(out, cfg, results, experiment, rows)
    sections = [("The table", report.format_table(rows)), ("The statements", report.format_predictions(results)),
                ("The mechanism", report.format_mechanism(results)),
                ("By training length", report.format_by_length(results)),
                ("Second views", "\n".join([report.format_second_views(results),
                                             report.format_second_views(results, "kd", "KD students")])),
                ("Half the learning rate", report.format_lr_check(results) if "lr_check" in results else ""),
                ("Augmented", report.format_augmented(results) if "augmented" in results else "")]
    for _, text in sections:
        if text:
            print(text)
    for line in report.unfitted(results):
        print("warning: " + line, file=sys.stderr)
    from theory_sims.cluster import format_total

    sections.append(("Time", format_total(results["timing_s"], "trained stage")))
    write_report(out, "view_learning: which views single models, ensembles and students learn",
                 command_line(parser.prog, argv), sections, figures.VIEW_LEARNING_FIGURES)
    print(f"{format_total(results['timing_s'], 'trained stage')}; results in {out}, on one page in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
