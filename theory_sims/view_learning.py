"""Ensemble, knowledge distillation, self-distillation and training the average on multi-view data.

The main experiment of the project (Allen-Zhu & Li, arXiv 2012.09816, on the synthetic data of
their theory). One run:

1. draws a multi-view world, a training set, and two test sets from the same world: multi-view
   samples (every view present) and single-view samples (exactly one view present);
2. trains ``--seeds`` single models from different random inits (stacked, in one call) to
   convergence: each until it has trained 10 times as long as it took to fit its training set and
   its cross-entropy is at most 0.01 (``--stop``, ``--fit-multiple``, ``--loss-target``), keeping
   what it had learned at 1x, 3x and 10x its fit step;
3. scores every seed and their ensemble (the average of the models' logits F);
4. distils the ensemble into ``--students`` fresh models (KD), distils seed s into a fresh seed
   (self-KD, s < students), trains the average of ``--seeds`` models jointly, and ensembles the
   KD students; as a control, trains the students' seeds on the labels alone for as many steps
   as the students (what KD adds beyond training longer), and trains one single model with
   ``--seeds`` times the neurons (as wide as the average: the paper's reason why training the
   average does not help);
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
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import theory_sims  # noqa: F401  (sets the BLAS thread spin before numpy work starts)
from multiview import MultiViewConfig, MultiViewDistribution
from multiview.checks import check_choice, check_int
from multiview.cli import Parser, add_config_flags, as_flag, given, progress_bars, require_cuda
from multiview.multiview import expected_single_fraction
from theory_sims import experiments as ex
from theory_sims.config import LearnerConfig, TrainConfig
from theory_sims.losses import KD_LOSSES
from theory_sims.stats import ensemble_output
from theory_sims.tracking import lambdas, learned_step, second_views, views_learned

# The regime; see docs/theory.md ("The data: the Definition's weights"). Other-class
# features weigh U[0.2, 0.4] in multi-view samples and U[0.025, 0.05] (Gamma) in single-view ones,
# every patch carries feature noise U[0, 0.01] of every feature (gamma); P = 64 rather than k^2 = 100
# keeps the whole run within a minute on 2 cores (--preset large has P = 100).
DEFAULT_DATA = MultiViewConfig(
    k=10, views=2, d=160, patches=64, feature_patches=2, missing=0.1, rho=0.02,
    other_features=3, other_weight_multi=0.4, other_weight_single=0.05, feature_noise=0.01, noise_std=0.079,
)
# m = 2 neurons per class (about log k, the low end of the paper's [polylog k, k]): with 3 or 5 the
# single models, trained to convergence, learn 79-82% of the views and the lottery washes out
# (docs/theory.md, "The map").
DEFAULT_LEARNER = LearnerConfig(k=10, m=2, q=5, varrho=1.0, sigma0=0.1)
# Single models are trained to convergence: each stops once it has trained 10 times as long as it
# took to fit its training set and its cross-entropy is at most 0.01; what it had learned at 1x, 3x
# and 10x its fit step is kept. Steps are capped at length 4 (gradient-norm clipping): where the
# gradient is large the path is that of a smaller learning rate, and lr 200 crosses the slow
# stretches (the start, and after the fit) in few steps.
DEFAULT_TRAIN = TrainConfig(lr=200.0, steps=3000, max_step=4.0, stop="converge", fit_multiple=10.0,
                            loss_target=0.01, snapshots=(1.0, 3.0, 10.0), track_every=2)
# Distillation: Hinton's KD at temperature 4 on the teacher alone (no label term). From single
# models trained to convergence it beat the capped objective (0.800 vs 0.615 single-view accuracy
# at the defaults) and the paper's one-sided objective (--kd-loss kd_paper), whose push, which can
# only raise a student's logits, makes them grow without bound once the student fits (see
# docs/theory.md, "The paper's KD objective, run"). Steps capped at length 4 as above.
DEFAULT_DISTILL = TrainConfig(lr=200.0, steps=400, max_step=4.0, loss="kd", temperature=4.0,
                              label_weight=0.0, track_every=5)
DEFAULT_RF = TrainConfig(lr=20.0, steps=300, track_every=0)
# The linearised network's gradient carries sReLU'(<w0, x>) ~ (sigma0 / varrho)^(q-1), about 1e-4 at
# the defaults, hence the large learning rate; 100 steps reach about 98% training accuracy.
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
    n_train: int = 200
    n_test: int = 1000
    seeds: int = 10
    students: int = 5
    seed: int = 0
    random_features: bool = True
    ntk: bool = False

    def __post_init__(self):
        check_int("n_train", self.n_train, 1)
        check_int("n_test", self.n_test, 1)
        check_int("seeds", self.seeds, 1)
        check_int("students", self.students, 1, self.seeds)
        check_int("seed", self.seed, 0)
        if self.learner.k != self.data.k:
            raise ValueError(f"learner k must equal the data's k={self.data.k}, got {self.learner.k}")
        if self.distill.loss not in KD_LOSSES:
            raise ValueError(f"distill loss must be one of {', '.join(map(repr, KD_LOSSES))}, got {self.distill.loss!r}")
        for part in ("train", "distill", "rf_train", "ntk_train"):  # untrained models have no verdict
            check_int(f"{part}.steps", getattr(self, part).steps, 1)

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


def _models_row(ev: ex.Evaluator, result, varrho=None) -> dict:
    """Scores and training accuracy of every model of a stack; with ``varrho``, also the views
    each learned and its final Lambda."""
    row = ev.models(result)
    row["train_acc"] = result.train_acc.tolist()
    row["fit_step"] = result.fit_step.tolist()  # first step at 100% training accuracy, -1 if never
    if varrho is not None:
        row["lambda"] = result.history["lambda"][-1]
        row["views_learned"] = views_learned(row["lambda"], varrho)
        # When each view was learned (first tracked step at Lambda >= varrho, -1 never), and
        # whether a class's extra views came before the model fitted its training set.
        row["learned_step"] = learned_step(result.history["step"], result.history["lambda"], varrho)
        row["second_views"] = second_views(row["learned_step"], result.fit_step)
    return row


def by_length(ev: ex.Evaluator, result, train_set, varrho: float) -> dict:
    """What the models of a stack had learned at each multiple of their own fit step that the
    training kept (``TrainConfig.snapshots``): {"3x": {step, views_per_class, views_learned,
    single_view_acc, multi_view_acc, ...}}, each a list over the models (means alongside)."""
    import torch

    out = {}
    feats = torch.as_tensor(train_set.features, dtype=result.model.W.dtype)
    for mult, (_, steps) in result.snapshots.items():
        model = result.snapshot_model(mult)
        lam = lambdas(model.weights, feats, train_set.config.views).numpy()
        learned = views_learned(lam, varrho)
        row = {k: v.tolist() for k, v in ex.scores(*ev.model_logits(model), ev.tests).items()}
        row.update(step=steps.tolist(), views_learned=learned, views_per_class=learned.sum(axis=-1).mean(axis=-1).tolist())
        row.update({f"mean_{k}": float(np.mean(row[k])) for k in ("single_view_acc", "multi_view_acc", "views_per_class")})
        out[f"{mult:g}x"] = row
    return out


def _with_means(per_model: dict) -> dict:
    out = dict(per_model)
    for key in ("test_acc", "multi_view_acc", "single_view_acc"):
        out[key + "_per_model"] = per_model[key]
        out[key] = float(np.mean(per_model[key]))
    return out


def control_config(cfg: ViewLearningConfig) -> TrainConfig:
    """The control for distillation: the students' seeds trained on the labels alone, as long as
    the students and on the same schedule (steps, learning rate, step cap), so that what
    distillation adds is not mistaken for what longer training adds."""
    d = cfg.distill
    return dataclasses.replace(cfg.train, stop="steps", steps=d.steps, lr=d.lr, max_step=d.max_step, snapshots=())


def make_data(cfg: ViewLearningConfig) -> tuple:
    """The run's training set and its test sets (multi-view, single-view), all from one world."""
    world = MultiViewDistribution(cfg.data, seed=cfg.seed)
    train_set = world.sample(cfg.n_train, seed=cfg.seed + 1)
    tests = ex.TestSets(
        multi=world.variant(missing=0.0).sample(cfg.n_test, seed=cfg.seed + 2),
        single=world.variant(missing=1.0, missing_mode="single").sample(cfg.n_test, seed=cfg.seed + 3),
        mu=expected_single_fraction(cfg.data),
    )
    return train_set, tests


class Stages:
    """Trains a stage (``ex.fit``) or, with a folder, reads it back from ``folder/<name>.pt`` where
    an earlier (killed) run of the same config finished it; every trained stage is saved there
    atomically, so ``--resume`` skips what was done and gives what the uninterrupted run gives."""

    def __init__(self, folder=None, progress: bool = False):
        self.folder = None if folder is None else Path(folder)
        self.progress = progress
        self.loaded: list[str] = []

    def fit(self, name: str, *args, **kwargs):
        if self.folder is None:
            return ex.fit(*args, progress=self.progress, **kwargs)
        import torch

        path = self.folder / f"{name}.pt"
        if path.exists():
            self.loaded.append(name)
            return torch.load(path, weights_only=False)
        result = ex.fit(*args, progress=self.progress, **kwargs)
        from theory_sims.results import write_atomic

        buf = io.BytesIO()
        torch.save(result, buf)
        write_atomic(path, buf.getvalue())
        return result


def run(cfg: ViewLearningConfig, progress: bool = False, log=print, stages_dir=None) -> tuple[dict, dict]:
    """Run the whole experiment. Returns (results, extras) where extras holds the trained stacks
    and test sets for figures. With ``stages_dir`` every trained stage is kept there and a stage
    found there is read instead of trained (see :class:`Stages`)."""
    timing: dict[str, float] = {}
    t_all = time.perf_counter()
    c = cfg.data
    train_set, tests = make_data(cfg)
    ev = ex.Evaluator(train_set, tests, cfg.train.backend, cfg.train.device)
    S, K = cfg.seeds, cfg.students
    seeds = list(range(cfg.seed * 1000, cfg.seed * 1000 + S))
    fresh = [s + 500 for s in seeds]  # students' inits: never a teacher's
    varrho = cfg.learner.varrho
    results: dict = {}
    extras: dict = {"train_set": train_set, "tests": tests}

    def stage(name):
        timing[name] = time.perf_counter() - stage.t0
        stage.t0 = time.perf_counter()
        log(f"  {name}: {timing[name]:.1f} s")

    stage.t0 = time.perf_counter()
    stages = Stages(stages_dir, progress)
    log(f"single models: {S} seeds, n={cfg.n_train}, k={c.k}, V={c.views}, missing={c.missing}")
    family, trained = _family(cfg, cfg.learner, cfg.train, cfg.distill, ev, train_set, seeds, fresh,
                              stages, stage, views=True)
    results.update(family)
    extras.update(trained)

    long = stages.fit("long_single", train_set, fresh[:K], cfg.learner, control_config(cfg))
    results["long_single"] = _with_means(_models_row(ev, long, varrho))
    stage("long_single")

    # The paper's reading of why training the average does not help: the average of S models is
    # one network with S*m neurons per class, and such a network still learns one view per class.
    # One single model of that width, trained like the single models, tests the reading here.
    wide_learner = dataclasses.replace(cfg.learner, m=cfg.learner.m * S)
    wide = stages.fit("wide_single", train_set, seeds[:1], wide_learner, cfg.train)
    results["wide_single"] = _with_means(_models_row(ev, wide, varrho))
    stage("wide_single")

    for mode, train_name in FROZEN_FAMILIES:
        if not getattr(cfg, mode):
            continue
        learner = dataclasses.replace(cfg.learner, mode=mode)
        train_cfg = getattr(cfg, train_name)
        distill = dataclasses.replace(train_cfg, stop="steps", snapshots=(), loss=cfg.distill.loss,
                                      temperature=cfg.distill.temperature, label_weight=cfg.distill.label_weight,
                                      kd_weight=cfg.distill.kd_weight, teacher_scale=cfg.distill.teacher_scale)
        results[mode], _ = _family(cfg, learner, train_cfg, distill, ev, train_set, seeds, fresh,
                                  stages, lambda name: None, views=False, prefix=mode + "-")
        stage(mode)
    timing["total"] = time.perf_counter() - t_all
    results["timing_s"] = timing
    if stages.loaded:
        log(f"  read back {len(stages.loaded)} finished stages: {', '.join(stages.loaded)}")
    return results, extras


def _family(cfg, learner, train_cfg, distill_cfg, ev, train_set, seeds, fresh, stages, stage, views, prefix=""):
    """Single models, their ensemble, KD, self-KD, the KD students' ensemble and training the
    average, for one learner. ``views``: also report which views each model learned; ``prefix``
    names the family's stages."""
    K, varrho = cfg.students, learner.varrho
    track = varrho if views else None  # _models_row reports views only with a varrho
    out = {}
    single = stages.fit(prefix + "single", train_set, seeds, learner, train_cfg)
    out["individual"] = _models_row(ev, single, track)
    if views and single.snapshots:
        out["individual"]["by_length"] = by_length(ev, single, train_set, varrho)
    out["ensemble"] = ev.ensemble(single)
    stage("single")

    teacher = ev.train_logits(single)  # (S, n, k)
    kd = stages.fit(prefix + "kd", train_set, fresh[:K], learner, distill_cfg, teacher=ensemble_output(teacher))
    out["kd"] = _with_means(_models_row(ev, kd, track))
    out["kd_ensemble"] = ev.ensemble(kd)
    stage("kd")

    self_kd = stages.fit(prefix + "self_kd", train_set, fresh[:K], learner, distill_cfg, teacher=teacher[:K])
    out["self_kd"] = _with_means(_models_row(ev, self_kd, track))
    stage("self_kd")

    avg_cfg = dataclasses.replace(train_cfg, loss="average", group_size=cfg.seeds, snapshots=())
    average = stages.fit(prefix + "average", train_set, seeds, learner, avg_cfg)
    out["average"] = ev.ensemble(average)  # the trained object is the members' mean output
    out["average"]["train_acc"] = [float(average.train_acc[0])]  # every member holds its group's accuracy
    out["average"]["fit_step"] = [int(average.fit_step[0])]
    if views:
        # The trained object is one network with S*m neurons per class, so its Lambda is the max
        # over all members' neurons and a view counts as learned if any member's neuron learned it.
        lam = np.asarray(average.history["lambda"][-1]).max(axis=0, keepdims=True)  # (1, k, V)
        out["average"]["lambda"] = lam
        out["average"]["views_learned"] = views_learned(lam, varrho)
    stage("average")
    return out, {"single": single, "kd": kd}


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
}


def build_parser() -> Parser:
    p = Parser(prog="python -m theory_sims.view_learning", description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="starting point for every other flag (default: default; 'large' is closer to the theory)")
    p.add_argument("--out", default=None,
                   help="run folder (default: runs/view_learning-<time>); one that holds another run is refused")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue the run in folder RUN, given with the same flags as when it started: stages it "
                        "finished (RUN/stages/) are read back, the others trained; the result is the uninterrupted "
                        "run's")
    p.add_argument("--backend", choices=("numba", "torch"), default=None,
                   help="trainer backend (default: numba, or torch with --device cuda)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="device of the torch backend (default: cpu)")
    p.add_argument("--no-random-features", action="store_true", help="skip the random-feature rows")
    p.add_argument("--ntk", action="store_true",
                   help="also run the network linearised around its init (NTK rows; about 15 s more at the defaults)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars are drawn only on a terminal; elsewhere, e.g. in a log, the "
                        "run prints one line per stage)")
    g = p.add_argument_group("experiment")
    for name, (kind, text) in EXPERIMENT_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
                       help=f"{text} (default: {getattr(ViewLearningConfig(), name)})")
    data_flags = add_config_flags(p.add_argument_group("data (multiview)"), MultiViewConfig)
    learner_flags = add_config_flags(p.add_argument_group("learner"), LearnerConfig, skip=("k", "mode"))
    t = p.add_argument_group("training of the single models")
    t.add_argument("--lr", type=float, default=None, help=f"learning rate (default: {DEFAULT_TRAIN.lr})")
    t.add_argument("--steps", type=int, default=None, help=f"most steps (default: {DEFAULT_TRAIN.steps})")
    t.add_argument("--stop", choices=("converge", "fit", "steps"), default=None,
                   help="'converge': each model trains until it has trained --fit-multiple times its fit step and "
                        "its cross-entropy is at most --loss-target; 'fit': --extra-steps after 100%% training "
                        f"accuracy; 'steps': --steps steps (default: {DEFAULT_TRAIN.stop})")
    t.add_argument("--fit-multiple", type=float, default=None,
                   help=f"--stop converge: at least this many times the fit step (default: {DEFAULT_TRAIN.fit_multiple:g})")
    t.add_argument("--loss-target", type=float, default=None,
                   help=f"--stop converge: and a training cross-entropy at most this (default: {DEFAULT_TRAIN.loss_target:g})")
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
    d.add_argument("--kd-steps", type=int, default=None, help=f"steps (default: {DEFAULT_DISTILL.steps})")
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

    run_flags = set_only(backend=args.backend, device=args.device)
    parts = {
        "data": given(args, args._data),
        "learner": given(args, args._learner),
        "train": set_only(lr=args.lr, steps=args.steps, extra_steps=args.extra_steps, stop=args.stop,
                          fit_multiple=args.fit_multiple, loss_target=args.loss_target, max_step=args.max_step),
        "distill": set_only(loss=args.kd_loss, temperature=args.kd_temperature, label_weight=args.kd_label_weight,
                            kd_weight=args.kd_weight, teacher_scale=args.kd_teacher_scale,
                            lr=args.kd_lr, steps=args.kd_steps, max_step=args.kd_max_step),
        "rf_train": set_only(lr=args.rf_lr, steps=args.rf_steps),
        "ntk_train": set_only(lr=args.ntk_lr, steps=args.ntk_steps),
    }
    base = ViewLearningConfig()
    for name, values in parts.items():  # each part alone first, so an error names the flag typed
        prefix = PART_FLAGS[name]
        if values.get("steps", 1) < 1:
            raise ValueError(f"--{prefix}steps must be an integer >= 1 (the run needs trained models), "
                             f"got {values['steps']}")
        try:
            dataclasses.replace(getattr(base, name), **values)
        except ValueError as err:
            raise ValueError(as_flag(str(err), prefix, names=values)) from None
    overrides = given(args, list(EXPERIMENT_FLAGS))
    if "seeds" in overrides and "students" not in overrides:  # at most as many students as seeds
        overrides["students"] = min(base.students, overrides["seeds"])
    if args.no_random_features:
        overrides["random_features"] = False
    if args.ntk:
        overrides["ntk"] = True
    for name in ("train", "distill", "rf_train", "ntk_train"):
        parts[name] = {**parts[name], **run_flags}
    try:
        return configure(args.preset, **parts, **overrides)
    except ValueError as err:
        raise ValueError(as_flag(str(err), names=EXPERIMENT_FLAGS)) from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    from theory_sims import figures, report
    from theory_sims.results import start_run, write_csv, write_json

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    try:
        out = start_run(args.out, args.resume, "view_learning", cfg.to_dict())
    except ValueError as err:
        parser.error(str(err))
    results, extras = run(cfg, progress=progress_bars(args.quiet), log=log, stages_dir=out / "stages")
    results["predictions"] = report.predictions(results)
    results["prediction_margins"] = report.margins(results)
    rows = report.table_rows(results)
    write_json(out / "results.json", results)
    write_csv(out / "table.csv", rows)
    write_csv(out / "per_seed.csv", report.per_seed_rows(results))
    if not args.no_figures:
        figures.view_learning_figures(out, cfg, results, extras, rows)
    print(report.format_table(rows))
    print("the paper's predictions, at this project's thresholds:")
    print(report.format_predictions(results["predictions"], results))
    print(report.format_by_length(results))
    print(report.format_second_views(results))
    print(report.format_second_views(results, "kd", "KD students"))
    for line in report.unfitted(results):
        print("warning: " + line, file=sys.stderr)
    print(f"total {results['timing_s']['total']:.1f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
