"""Search the regime where the paper's theorems hold, then validate it on data no trial saw.

An Optuna study over the parameters the theory says decide the outcome: the dimension d against
the noise (``noise_norm``, the Gaussian noise's norm per patch, sigma_p * sqrt(d)), the training
set's size, the patches, the learner (sigma0, varrho, q, m), the learning rates and the stop rule,
and distillation (temperature, the teacher's scale, length). ``--views 2 --missing 0.1`` and
k = 10 stay fixed: the command our users run. Every trial runs the main experiment
(:mod:`theory_sims.view_learning`, without its random-feature rows and controls, which judge no
theorem) on each of ``--data-seeds`` (default 0-4), one job per data seed on the cluster layer
(:mod:`theory_sims.cluster`; the data seeds of a batch of trials one after the other, and a trial
whose score after its first seeds is below the median of the earlier trials' stops there, Optuna's
median pruner), and scores

    shortfall = sum over the theorems of min(margin, 0)   (per data seed)
    score = mean of the shortfall over the data seeds - 0.5 x its standard deviation over them,

the theorems' total shortfall with a penalty for its spread over seeds (0 where all hold on every seed; the
theorems are ``report.STATEMENTS`` of kind "theorem", :data:`THEOREMS`; margins in units of mu, as
:func:`theory_sims.report.judge` measures them, with its finite-k tolerance). Optuna's TPE sampler
(seeded by ``--sampler-seed``) maximises it.

The study lives in the run folder (``study.journal``, Optuna's journal file, append-only), every
job's record in ``jobs/``; a killed search resumes with ``--resume RUN`` (same flags) and loses at
most its running trials, which are asked again with the same parameters (their finished data
seeds are read back; a journal record the kill cut off is set aside in ``study.journal.torn-<n>``
and its trial asked again). ``--trials`` is the size of the study, counting the trials it already has.
A new study can start from an earlier one's trials with ``--warm-start RUN`` (the same experiment
and data seeds, the values inside this search's ranges): a range whose edge held the best trials
widens without running them again.

Outputs, rewritten after every batch: ``trials.csv`` (one row per trial: parameters, score, each
theorem's margin per data seed, wall time), ``best.json`` (the best regimes as
``view_learning`` flags); at the end ``importances.png`` (Optuna's default parameter importances, PED-ANOVA)
and ``slices.png`` (every trial's score against each parameter). The experiment's own flags
(``--k``, ``--seeds``, ...) set what the search does not vary; ``--axes`` narrows it to some
parameters. With ``--validate 100,101,102,103,104`` the best regime is then run on those
held-out data seeds, which no trial used, and ``validation.csv`` / ``validation.json`` hold each
seed's verdicts: the test set of the search. ``report.md`` puts the search on one page: the
command, the best regimes and the validation as printed, and the figures. ``--config RUN`` starts
from an earlier run's settings: a view_learning run's (the search's base) or a search's (its base,
and its data seeds, axes with their ranges and sampler seed unless given). Example::

    python -m theory_sims.search --trials 40 --out runs/search --validate 100,101,102,103,104
    python -m theory_sims.search --resume runs/search --trials 60   # 20 more
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import theory_sims  # noqa: F401  (sets the BLAS thread spin before numpy work starts)
from multiview.checks import check_int
from multiview.cli import Parser
from theory_sims import cluster, report
from theory_sims import view_learning as vl
from theory_sims.sweep import point_job, with_value

THEOREMS = [name for name, s in report.STATEMENTS.items() if s.kind == "theorem"]


@dataclass(frozen=True)
class Axis:
    """One searched parameter: a config path (``SECTION.FIELD``, a field of the experiment, or
    ``noise_norm``), and its range (``low``/``high``, on a log scale with ``log``) or ``choices``."""

    path: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    step: int | None = None
    choices: tuple | None = None

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, log=self.log)

    def distribution(self):
        import optuna.distributions as od

        if self.choices is not None:
            return od.CategoricalDistribution(list(self.choices))
        if self.integer:
            return od.IntDistribution(int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return od.FloatDistribution(self.low, self.high, log=self.log)


# The regime's axes, in the race's terms. The noise enters as its norm per patch (about 1 in the
# paper's scaling, sigma_p = 1/(sqrt(d) polylog k)), so d moves how specific a memorised noise
# patch is without moving how loud it is. varrho enters as ``race_ratio``, varrho over the expected
# initial Lambda (sigma0 times the mean of the largest of m standard normals, :func:`init_lambda`):
# how far below varrho the race starts, which is how long it runs in the power phase, where an
# init's lead compounds (at the old defaults 7.6: the first view crossed varrho by step 4, median).
# The single models' learning rate reaches 400 (at the probe's 100, halving it moved 0.01 view per
# class: --check-lr; the regime chosen is checked the same way).
# Distillation trains to a plateau of its loss (``distill.plateau``), not a fixed number of steps.
# The second search ran d in (320, 640), noise_norm to 1.5, lr to 150 and fit_multiple in (3, 10):
# its best trials sat at the top of lr, noise_norm and d and at the bottom of fit_multiple, so the
# third widened those (``--warm-start`` keeps the second's trials).
SPACE = (
    Axis("data.d", choices=(320, 640, 1280)),
    Axis("noise_norm", 0.3, 2.5),
    Axis("n_train", 100, 300, integer=True, step=50),
    Axis("data.patches", choices=(32, 64)),
    Axis("learner.sigma0", 0.03, 0.3, log=True),
    Axis("race_ratio", 4.0, 60.0, log=True),
    Axis("learner.q", 3, 8, integer=True),
    Axis("learner.m", 2, 4, integer=True),
    Axis("train.lr", 10.0, 400.0, log=True),
    Axis("train.fit_multiple", choices=(1.5, 3.0, 10.0)),
    Axis("distill.lr", 100.0, 1600.0, log=True),
    Axis("distill.temperature", 1.0, 20.0, log=True),
    Axis("distill.teacher_scale", 1.0, 10.0),
    Axis("distill.plateau", 0.005, 0.05, log=True),
)

# Where the study starts (Optuna's enqueue_trial): the probe regime of the lottery-race issue,
# --varrho 2 --lr 100 --noise-std 0.0395 --kd-temperature 8 --kd-teacher-scale 5, in these axes.
PROBE = {"data.d": 640, "noise_norm": 1.0, "n_train": 150, "data.patches": 32, "learner.sigma0": 0.12,
         "race_ratio": 19.7, "learner.q": 5, "learner.m": 3, "train.lr": 100.0, "train.fit_multiple": 3.0,
         "distill.lr": 770.0, "distill.temperature": 8.0, "distill.teacher_scale": 5.0, "distill.plateau": 0.02}

# The spread over data seeds costs this much of its standard deviation in the score.
SPREAD_PENALTY = 0.5


def init_lambda(sigma0: float, m: int) -> float:
    """The expected initial Lambda of a view, E max_{r<m} <w_r, v> for w_r ~ N(0, sigma0^2 I) and a
    unit v: sigma0 times the mean of the largest of m standard normals."""
    from scipy import integrate, stats

    mean_max, _ = integrate.quad(lambda x: x * m * stats.norm.pdf(x) * stats.norm.cdf(x) ** (m - 1), -np.inf, np.inf)
    return float(sigma0 * mean_max)


# How the students train in every trial: to a plateau of their loss (the axis above), after at least
# twice their fit step, at most 2000 steps (view_learning --kd-stop converge).
SEARCH_DISTILL = dict(stop="converge", fit_multiple=2.0, loss_target=1e-4, plateau_window=50, steps=2000)

# A run's budget: the steps of the experiment's defaults (3000 for the single models, 2000 for the
# students) at the probe's shape (n = 150 samples of P = 32 patches in d = 640, m = 3 neurons a
# class), and proportionally fewer where a step costs more, so that no run takes much over 90 s here.
BUDGET_SHAPE = 150 * 32 * 640 * 3


def budget(cfg: vl.ViewLearningConfig) -> vl.ViewLearningConfig:
    """``cfg`` with the most steps of its single models and students cut to the search's budget."""
    cost = cfg.n_train * cfg.data.patches * cfg.data.d * cfg.learner.m
    cut = lambda c: dataclasses.replace(c, steps=max(1, min(c.steps, c.steps * BUDGET_SHAPE // cost)))  # noqa: E731
    return dataclasses.replace(cfg, train=cut(cfg.train), distill=cut(cfg.distill))


def regime(base: vl.ViewLearningConfig, params: dict) -> vl.ViewLearningConfig:
    """``base`` with a trial's parameters set (``noise_norm`` as noise_std = noise_norm / sqrt(d),
    ``race_ratio`` as varrho = race_ratio x :func:`init_lambda`), without the rows that judge no
    theorem (random features, NTK, controls, the trained average), its students trained as
    :data:`SEARCH_DISTILL`, within the :func:`budget`."""
    cfg = dataclasses.replace(base, distill=dataclasses.replace(base.distill, **SEARCH_DISTILL))
    for path, value in params.items():
        if path not in ("noise_norm", "race_ratio"):
            cfg = with_value(cfg, path, value)
    if "noise_norm" in params:
        cfg = with_value(cfg, "data.noise_std", float(params["noise_norm"]) / math.sqrt(cfg.data.d))
    if "race_ratio" in params:
        varrho = float(params["race_ratio"]) * init_lambda(cfg.learner.sigma0, cfg.learner.m)
        cfg = with_value(cfg, "learner.varrho", round(varrho, 4))
    return budget(dataclasses.replace(cfg, random_features=False, ntk=False, controls=False, average=False))


# Fields the command line names otherwise (the learner's k follows the data's; --views and
# --missing open every command) or not at all (the learner's mode).
FIXED_IN_COMMAND = {("learner", "k"), ("learner", "mode"), ("data", "views"), ("data", "missing")}


def command(cfg: vl.ViewLearningConfig) -> str:
    """The ``view_learning`` command line that runs ``cfg`` (floats to 6 significant digits)."""
    return " ".join([f"python -m theory_sims.view_learning --views {cfg.data.views} --missing {cfg.data.missing:g}",
                     *flags(cfg)])


def flags(cfg: vl.ViewLearningConfig, base: vl.ViewLearningConfig = vl.ViewLearningConfig()) -> list[str]:
    """The ``view_learning`` flags that turn ``base`` into ``cfg`` (the fields that differ)."""
    out = []
    for part, prefix in vl.PART_FLAGS.items():
        mine, theirs = getattr(cfg, part), getattr(base, part)
        for f in dataclasses.fields(mine):
            value = getattr(mine, f.name)
            if value != getattr(theirs, f.name) and (part, f.name) not in FIXED_IN_COMMAND:
                name = f.name.replace("_", "-")
                out += [f"--{name if name.startswith(prefix) else prefix + name}", f"{value:.6g}" if isinstance(value, float) else str(value)]
    for name in vl.EXPERIMENT_FLAGS:
        if name != "seed" and getattr(cfg, name) != getattr(base, name):
            out += ["--" + name.replace("_", "-"), str(getattr(cfg, name))]
    return out


def params_key(params: dict) -> str:
    """A short, stable name for a set of parameters (job records are keyed by it, so a trial asked
    again with the same parameters reads back what it finished)."""
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# One run of the experiment at a regime on one data seed is a sweep point's job: the report's summary
# (every statement's value and margin, single-view accuracies, views used) and its wall time.
trial_job = point_job


def score(records: list[dict]) -> float:
    """The theorems' total shortfall, averaged over data seeds, less :data:`SPREAD_PENALTY` times its
    standard deviation over them: 0 where all hold on every seed, < 0 otherwise."""
    short = [sum(min(r["margin_" + n], 0.0) for n in THEOREMS) for r in records]
    return float(np.mean(short) - SPREAD_PENALTY * np.std(short))


def held_everywhere(records: list[dict]) -> int:
    """How many of the :data:`THEOREMS` held on every data seed."""
    return sum(all(r["holds_" + n] for r in records) for n in THEOREMS)


def _jobs(base, params: dict, seeds: list[int], prefix: str = "") -> list[cluster.Job]:
    cfg = regime(base, params)
    key = prefix + params_key(params)
    return [cluster.Job(f"{key}-seed{s}", trial_job, (dataclasses.replace(cfg, seed=s),)) for s in seeds]


def mend_journal(folder: Path) -> str | None:
    """Make the study journal in ``folder`` readable again after a write that was cut off (a kill -9
    while Optuna appended a record): returns the line to print, or None where the journal is whole.

    Optuna's journal is one JSON record a line, appended. A last line without its line end is a write
    cut off: where it is a whole record (only the line end was lost) the line end is written; otherwise
    its bytes are set aside in ``study.journal.torn-<n>`` (nothing is lost) and the journal is cut back
    to its last whole line, so that the next record starts on a line of its own (appended to the torn
    bytes, Optuna would read neither). The trial whose record was cut is then left running, and
    :func:`requeue_running` asks it again. A line before the last that is not a record is damage this
    cannot mend: a ValueError naming the file and the line."""
    path = folder / "study.journal"
    if not path.is_file():
        return None
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    for number, line in enumerate(lines, start=1):
        if not _is_record(line):
            raise ValueError(f"--resume {folder}: {path} line {number} is not a journal record (a damaged file, not "
                             "a write cut off at its end); it is not mended: restore the file or move the run away")
    tail = data[end:]
    if not tail:
        return None
    if _is_record(tail):  # a JSON object has no shorter prefix that parses: only the line end is missing
        with _synced(path, "ab") as f:
            f.write(b"\n")
        return f"{path}: its last record had lost its line end (a write cut off); the line end is written back"
    n = 1
    while (torn := path.with_name(f"{path.name}.torn-{n}")).exists():
        n += 1
    with _synced(torn, "xb") as f:
        f.write(tail)
    with _synced(path, "r+b") as f:
        f.truncate(end)
    return (f"{path}: its last line ({len(tail)} bytes) was cut off by an interrupted write; set aside in {torn.name}, "
            f"the study resumes from the {len(lines)} whole records before it (a trial whose record was cut is asked "
            "again)")


def _storage(folder: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(folder / "study.journal")))


def open_study(folder: Path, sampler_seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial whose score on its first data seeds is below the median of the earlier trials' at the
    # same point stops there (after 5 finished trials): most of a search's time goes to poor regimes.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    study = optuna.create_study(study_name="regime", storage=_storage(folder), direction="maximize",
                                pruner=pruner, load_if_exists=True)
    reseed(study, sampler_seed)
    return study


def reseed(study, sampler_seed: int) -> None:
    """Give ``study`` Optuna's TPE sampler, seeded by ``sampler_seed`` and the number of trials the
    study holds: a resumed or warm-started study goes on from where it is instead of asking its
    first random trials again, and the same study state asks the same trials."""
    import optuna

    n = len(study.get_trials(deepcopy=False))
    seed = sampler_seed if n == 0 else int(np.random.SeedSequence([sampler_seed, n]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)


def optuna_state(name: str):
    import optuna

    return getattr(optuna.trial.TrialState, name)


def requeue_running(study) -> int:
    """Trials a killed search left running: marked failed and asked again with their parameters."""
    import optuna

    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
    return len(stale)


def _same_experiment(saved, base: dict) -> bool:
    """Whether an earlier search's experiment (its config.json's ``base``) is ``base``: every field
    it names equal, and every field added to the experiment since at its default (which reproduces
    the runs before the field existed)."""
    if not isinstance(saved, dict) or set(saved) != set(base):
        return False
    from theory_sims.results import as_json

    default = as_json(vl.ViewLearningConfig().to_dict())
    for section, fields in base.items():
        old = saved[section]
        if not isinstance(fields, dict):
            if old != fields:
                return False
            continue
        if not isinstance(old, dict) or any(old.get(f, default[section].get(f)) != v for f, v in fields.items()) \
                or set(old) - set(fields):
            return False
    return True


def warm_trials(source: Path, config: dict, axes) -> list:
    """The finished and pruned trials of the earlier search in ``source``, as trials of this search
    (their scores, per-seed scores and records; :meth:`optuna.Study.add_trial` adds them), so that a
    search whose best trials sat at a range's edge can widen that range without running its trials
    again. The earlier search must have run the same experiment (``config["base"]``) on the same data
    seeds over the same axes, and every value must lie inside this search's (wider) ranges. Errors
    are ValueErrors naming ``--warm-start``."""
    import optuna

    source = Path(source)
    try:
        if not (source / "study.journal").is_file():
            raise OSError("no study.journal there")
        saved = json.loads((source / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--warm-start {source}: not a search folder ({err})") from None
    names = sorted(a.path for a in axes)
    from theory_sims.results import as_json

    if not isinstance(saved, dict) or not _same_experiment(saved.get("base"), as_json(config["base"])):
        raise ValueError(f"--warm-start {source}: that search ran another experiment (its flags must be this one's)")
    if saved.get("data_seeds") != config["data_seeds"] or sorted(a["path"] for a in saved.get("space", [])) != names:
        raise ValueError(f"--warm-start {source}: that search ran other data seeds ({saved.get('data_seeds')}) or other "
                         "axes than this one (only its ranges may differ)")
    dists = {a.path: a.distribution() for a in axes}
    copied = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for t in optuna.load_study(study_name="regime", storage=_storage(source)).get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "PRUNED"):
            continue
        outside = [n for n in names if not dists[n]._contains(dists[n].to_internal_repr(t.params[n]))]
        if outside:
            raise ValueError(f"--warm-start {source}: its trial {t.number} has {outside[0]} = {t.params[outside[0]]}, "
                             "outside this search's range")
        copied.append(optuna.trial.create_trial(
            state=t.state, value=t.value if t.state.name == "COMPLETE" else None, params=dict(t.params),
            distributions=dists, intermediate_values=dict(t.intermediate_values),
            user_attrs={**t.user_attrs, "warm_start": f"{source.name}#{t.number}"}))
    return copied


def trial_rows(study, seeds: list[int], axes=SPACE) -> list[dict]:
    """One row per finished trial: number, score, theorems held on every seed, parameters, each
    theorem's margin on each data seed, the mean wall time of a run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE":
            continue
        row = {"trial": t.number, "score": t.value, "theorems_held": t.user_attrs["theorems_held"],
               **{a.path: t.params[a.path] for a in axes}}
        for s, rec in zip(seeds, t.user_attrs["records"]):
            for n in THEOREMS:
                row[f"margin_{n}_seed{s}"] = rec["margin_" + n]
        row["run_s"] = float(np.mean([r["wall_s"] for r in t.user_attrs["records"]]))
        rows.append(row)
    return rows


def best_regimes(rows: list[dict], base, axes=SPACE, top: int = 5) -> list[dict]:
    """The ``top`` trials by score (then by run time), each with its ``view_learning`` flags."""
    ranked = sorted(rows, key=lambda r: (-r["score"], r["run_s"]))[:top]
    names = [a.path for a in axes]
    out = []
    for r in ranked:
        params = {n: r[n] for n in names if n in r}
        cfg = regime(base, params)
        out.append({"trial": r["trial"], "score": r["score"], "theorems_held": r["theorems_held"],
                    "run_s": r["run_s"], "params": params,
                    "command": command(cfg)})
    return out


def _is_record(line: bytes) -> bool:
    """Whether ``line`` is a whole journal record (a JSON object)."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@contextlib.contextmanager
def _synced(path: Path, mode: str):
    """``path`` opened in ``mode``; what was written is on disk when the block ends."""
    with open(path, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


# The search's figures and their one-line captions (report.md, in this order).
SEARCH_FIGURES = {
    "importances.png": "which parameters decide the theorems' shortfall (Optuna's PED-ANOVA importance)",
    "slices.png": "each finished trial's score against each parameter, the best trial in red",
}


def plots(study, rows: list[dict], folder: Path, axes=SPACE) -> list[Path]:
    """Optuna's parameter importances (its default evaluator, PED-ANOVA) and one slice panel per parameter (every finished
    trial's score against the parameter's value), as PNG (and PDF) in the run folder."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import seaborn as sns
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ov

    from theory_sims.results import save_figure

    written = []
    if len(rows) < 2:
        return written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        from optuna.importance import PedAnovaImportanceEvaluator

        ax = ov.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    fig = ax.figure
    for loc in ("left", "center", "right"):  # Optuna's own title, replaced by one that says what is measured
        ax.set_title("", loc=loc)
    few = " (few trials: not conclusive)" if len(rows) < 20 else ""
    ax.set_title(f"which parameters decide the theorems' shortfall (Optuna's PED-ANOVA importance)\n"
                 f"over {len(rows)} finished trials{few}", fontsize=10)
    if ax.get_legend() is not None:  # Optuna's legend sat on the top bar; the title says what it said
        ax.get_legend().remove()
    fig.set_size_inches(8, 0.35 * len(axes) + 1.8)
    fig.tight_layout()
    written += save_figure(fig, folder / "importances.png")
    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(len(axes), 5)
    fig, grid = plt.subplots(math.ceil(len(axes) / cols), cols, figsize=(3.2 * cols, 2.8 * math.ceil(len(axes) / cols)),
                             sharey=True, squeeze=False)
    best = max(rows, key=lambda r: r["score"])
    for ax, axis in zip(grid.ravel(), axes):
        x = [r[axis.path] for r in rows]
        ax.scatter(x, [r["score"] for r in rows], s=18, color="tab:blue", alpha=0.7)
        ax.scatter([best[axis.path]], [best["score"]], s=40, color="tab:red", label="best trial")
        if axis.log:
            ax.set_xscale("log")
            ax.set_xticks(np.geomspace(axis.low, axis.high, 4))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        # the whole searched range, so that a part no finished trial reached shows as empty
        if axis.choices is not None:
            ax.set_xticks(list(axis.choices))
            pad = 0.05 * (max(axis.choices) - min(axis.choices))
            ax.set_xlim(min(axis.choices) - pad, max(axis.choices) + pad)
        else:
            ax.set_xlim(axis.low * 0.95 if axis.log else axis.low - 0.03 * (axis.high - axis.low),
                        axis.high * 1.05 if axis.log else axis.high + 0.03 * (axis.high - axis.low))
        ax.set_xlabel(axis.path, fontsize=9)
        # a regime that never fits scores far below the rest: a symlog axis keeps both readable
        ax.set_yscale("symlog", linthresh=0.1)
    for ax in grid.ravel()[len(axes):]:
        ax.axis("off")
    for ax in grid[:, 0]:
        ax.set_ylabel("score")
    grid[0, 0].legend(fontsize=8)
    fig.suptitle("each finished trial's score (the theorems' total shortfall, 0 = all hold; symlog) against each parameter",
                 fontsize=11)
    fig.tight_layout()
    written += save_figure(fig, folder / "slices.png")
    plt.close("all")
    return written


def validate(base, params: dict, seeds: list[int], folder: Path, where, log) -> list[dict]:
    """The regime ``params`` run on the held-out ``seeds``: one row per seed with every theorem's
    value, margin and verdict."""
    jobs = _jobs(base, params, seeds, prefix="validate-")
    records = cluster.run_jobs(jobs, folder / "jobs", where, log=log)
    rows = []
    for s, job in zip(seeds, jobs):
        rec = records[job.key]
        row = {"data_seed": s, "theorems_held": sum(rec["holds_" + n] for n in THEOREMS)}
        for n in report.judged_names([rec]):
            row[n] = rec["value_" + n]
            row["margin_" + n] = rec["margin_" + n]
            row["holds_" + n] = rec["holds_" + n]
        row.update(sv_individual=rec["sv_individual"], sv_ensemble=rec["sv_ensemble"], sv_kd=rec["sv_kd"],
                   sv_self_kd=rec["sv_self_kd"], run_s=rec["wall_s"])
        rows.append(row)
    return rows


def format_validation(rows: list[dict]) -> str:
    head = f"{'seed':>5s} " + " ".join(f"{n:>16s}" for n in THEOREMS) + "  held"
    lines = [head]
    for r in rows:
        cells = " ".join(f"{r[n]:7.3f} {'holds' if r['holds_' + n] else 'FAILS':>8s}" for n in THEOREMS)
        lines.append(f"{r['data_seed']:>5d} {cells}  {r['theorems_held']}/{len(THEOREMS)}")
    return "\n".join(lines)


def _seed_list(flag: str, text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        seeds = [-1]
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise ValueError(f"{flag} must be distinct comma-separated integers >= 0, got {text!r}")
    return seeds


def _axes(text: str | None) -> tuple[Axis, ...]:
    if text is None:
        return SPACE
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {a.path: a for a in SPACE}
    bad = [n for n in names if n not in known]
    if not names or bad or len(set(names)) < len(names):
        raise ValueError(f"--axes must name distinct axes among {', '.join(known)}, got {text!r}")
    return tuple(known[n] for n in names)


def build_parser() -> Parser:
    p = vl.build_parser()
    p.prog = "python -m theory_sims.search"
    p.description = __doc__
    for action in p._actions:  # the experiment's flags set what the search does not vary
        if action.dest == "out":
            action.help = "search folder (default: runs/search-<time>); one that holds another run is refused"
        if action.dest == "resume":
            action.help = ("continue the study in folder RUN, given with the same flags as when it started (--trials "
                           "and --timeout-min may change): finished trials are kept, trials a killed search left "
                           "running are asked again with their parameters")
        if action.dest == "config":
            action.help = ("start from the settings of an earlier run instead of a preset: RUN is its folder or its "
                           "config.json, of a view_learning run (the search's base) or of a search (its base, and its "
                           "--data-seeds, --axes with their ranges and --sampler-seed unless given here); a sweep's "
                           "gives its base only; flags given beside it override those settings")
    g = p.add_argument_group("search (the experiment's flags above set what it does not vary)")
    g.add_argument("--trials", type=int, default=40,
                   help="finished trials the study should hold, counting those it has (default: 40)")
    g.add_argument("--timeout-min", type=float, default=None,
                   help="stop asking for new trials after this many minutes of this process (default: no limit)")
    g.add_argument("--data-seeds", default=None, metavar="S1,S2,...",
                   help="data seeds every trial is scored on (default: 0,1,2,3,4: the spread over seeds is large)")
    g.add_argument("--validate", default=None, metavar="S1,S2,...",
                   help="after the search, run the best regime on these held-out data seeds (none of --data-seeds), "
                        "e.g. 100,101,102,103,104")
    g.add_argument("--axes", default=None, metavar="A1,A2,...",
                   help="search only these axes (the others keep the experiment's values): "
                        + ", ".join(a.path for a in SPACE) + " (default: all)")
    g.add_argument("--sampler-seed", type=int, default=None, help="seed of Optuna's TPE sampler (default: 0)")
    g.add_argument("--warm-start", default=None, metavar="RUN",
                   help="a new study starts from the finished and pruned trials of the earlier search in RUN (the "
                        "same experiment flags, data seeds and axes; its values inside this search's ranges), "
                        "copied with their scores: a range can widen without running those trials again")
    cluster.add_flags(p, default="serial")
    return p


def search(study, base, axes, seeds: list[int], trials: int, out: Path, where, timeout_min=None, log=print) -> list[dict]:
    """Ask, run and tell trials until the study holds ``trials`` finished ones (or ``timeout_min``
    minutes passed); after every batch (as many trials as the cluster has workers) rewrite
    trials.csv and best.json. Returns the trials' rows."""
    from theory_sims.results import write_csv, write_json

    t0 = time.perf_counter()
    # As many trials at once as the workers can give all their data seeds to, at least one; each
    # round runs the next `chunk` data seeds of every trial, so that a worker is not left idle while
    # a slow regime runs, and a poor trial stops after its first round.
    workers = where.workers if where.mode == "local" else 1
    batch = max(1, workers // len(seeds))
    chunk = -(-workers // batch)

    def finished():
        return sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))

    while finished() < trials:
        if timeout_min is not None and time.perf_counter() - t0 > 60 * timeout_min:
            log(f"--timeout-min {timeout_min:g} reached")
            break
        asked = [study.ask({a.path: a.distribution() for a in axes}) for _ in range(min(batch, trials - finished()))]
        jobs = {t.number: _jobs(base, t.params, seeds) for t in asked}
        records: dict[int, list] = {t.number: [] for t in asked}
        alive = list(asked)
        for a in range(0, len(seeds), chunk):  # the batch's trials a round of seeds at a time
            now = range(a, min(a + chunk, len(seeds)))
            done = cluster.run_jobs([jobs[t.number][i] for t in alive for i in now], out / "jobs", where,
                                    log=lambda *a: None)
            for t in list(alive):
                records[t.number] += [done[jobs[t.number][i].key] for i in now]
                i = now[-1]
                t.report(score(records[t.number]), i)
                if i < len(seeds) - 1 and t.should_prune():
                    alive.remove(t)
                    t.set_user_attr("records", records[t.number])
                    study.tell(t, state=optuna_state("PRUNED"))
                    log(f"trial {t.number}: pruned after {i + 1} data seed(s), score so far "
                        f"{score(records[t.number]):+.3f}")
        for t in alive:
            recs = records[t.number]
            t.set_user_attr("records", recs)
            t.set_user_attr("theorems_held", held_everywhere(recs))
            study.tell(t, score(recs))
            log(f"trial {t.number}: score {score(recs):+.3f}, theorems held on every seed "
                f"{held_everywhere(recs)}/{len(THEOREMS)} "
                f"({np.mean([r['wall_s'] for r in recs]):.0f} s a run); best so far {study.best_value:+.3f} "
                f"(trial {study.best_trial.number})")
        rows = trial_rows(study, seeds, axes)
        write_csv(out / "trials.csv", rows)
        write_json(out / "best.json", best_regimes(rows, base, axes))
    return trial_rows(study, seeds, axes)


def saved_search(where: str) -> dict:
    """The settings of the search whose folder or config.json ``--config`` names (read by
    :func:`view_learning.read_config` first), or {} for another run (view_learning's or a sweep's:
    they give the base only)."""
    from theory_sims.results import load_config_file

    saved = load_config_file(where)
    return saved if set(saved) == {"base", "space", "data_seeds", "sampler_seed", "score"} else {}


def settings(args) -> tuple[vl.ViewLearningConfig, list[int], list[int], tuple[Axis, ...]]:
    """The search the flags describe: its base config, data seeds, held-out seeds and axes; with
    ``--config`` of a search, that search's data seeds, axes (their ranges as saved) and sampler seed
    unless they are given (``args.sampler_seed`` is set). A ValueError names the flag."""
    base = vl.config_from_args(args)
    saved = saved_search(args.config) if args.config is not None else {}
    if args.data_seeds is None:
        args.data_seeds = ",".join(map(str, saved.get("data_seeds", (0, 1, 2, 3, 4))))
    if args.sampler_seed is None:
        args.sampler_seed = saved.get("sampler_seed", 0)
    check_int("--trials", args.trials, 1)
    if args.timeout_min is not None and not args.timeout_min > 0:
        raise ValueError(f"--timeout-min must be a number > 0, got {args.timeout_min}")
    check_int("--sampler-seed", args.sampler_seed, 0)
    seeds = _seed_list("--data-seeds", args.data_seeds)
    held_out = _seed_list("--validate", args.validate) if args.validate is not None else []
    if set(held_out) & set(seeds):
        raise ValueError(f"--validate must name held-out data seeds that no trial uses, but "
                         f"{sorted(set(held_out) & set(seeds))} are in --data-seeds")
    if saved and args.axes is None:  # the search's axes with the ranges it ran
        try:
            axes = tuple(Axis(**{**a, "choices": None if a["choices"] is None else tuple(a["choices"])})
                         for a in saved["space"])
        except (TypeError, KeyError) as err:
            raise ValueError(f"--config {args.config}: its space cannot be read ({err})") from None
    else:
        axes = _axes(args.axes)
    return base, seeds, held_out, axes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        base, seeds, held_out, axes = settings(args)
        where = cluster.where(args)
    except ValueError as err:
        parser.error(str(err))
    from theory_sims.results import command_line, start_run, write_csv, write_json, write_report

    config = {"base": base.to_dict(), "space": [dataclasses.asdict(a) for a in axes], "data_seeds": seeds,
              "sampler_seed": args.sampler_seed,
              "score": f"mean over data seeds of sum over theorems of min(margin, 0), less {SPREAD_PENALTY:g} x its std "
                       "over them"}
    try:
        # checked before anything is written; a resumed study already holds them
        warm = warm_trials(Path(args.warm_start), config, axes) if args.warm_start and not args.resume else []
        out = start_run(args.out, args.resume, "search", config)
        mended = mend_journal(out) if args.resume else None  # a search killed while it wrote its journal
    except ValueError as err:
        parser.error(str(err))
    if mended:
        print(mended, file=sys.stderr, flush=True)
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    study = open_study(out, args.sampler_seed)
    if not study.get_trials(deepcopy=False) and warm:  # a new study from an earlier one's trials
        study.add_trials(warm)
        reseed(study, args.sampler_seed)
        write_json(out / "warm_start.json", {"source": str(args.warm_start), "trials_copied": len(warm)})
        log(f"{len(warm)} finished and pruned trials copied from {args.warm_start}")
    elif not study.get_trials(deepcopy=False):  # a new study starts from the probe regime
        study.enqueue_trial({a.path: PROBE[a.path] for a in axes if a.path in PROBE})
    again = requeue_running(study)
    if again:
        log(f"{again} trials the last search left running are asked again with their parameters")
    log(f"search in {out}: {len(axes)} parameters, data seeds {seeds}, on {where.mode}; study {out / 'study.journal'}")
    with cluster.held(where):  # one set of workers for the whole study
        rows = search(study, base, axes, seeds, args.trials, out, where, args.timeout_min, log)
    sections = []
    if rows:
        best = best_regimes(rows, base, axes)
        if not args.no_figures:
            plots(study, rows, out, axes)
        text = "\n".join([f"{len(rows)} trials; the best:"] + [
            f"  trial {b['trial']}: score {b['score']:+.3f}, {b['theorems_held']}/{len(THEOREMS)} theorems on "
            f"every data seed, {b['run_s']:.0f} s a run\n    {b['command']}" for b in best])
        print(text)
        sections.append(("The best regimes", text))
        if held_out:
            log(f"validating trial {best[0]['trial']} on held-out data seeds {held_out}")
            with cluster.held(where):
                rows_v = validate(base, best[0]["params"], held_out, out, where, log)
            write_csv(out / "validation.csv", rows_v)
            write_json(out / "validation.json", {"trial": best[0]["trial"], "params": best[0]["params"],
                                                 "command": best[0]["command"], "seeds": rows_v})
            text = (f"held-out data seeds, trial {best[0]['trial']} (test error in units of mu, each theorem's "
                    f"verdict):\n{format_validation(rows_v)}")
            print(text)
            sections.append(("Held-out data seeds", text))
    write_report(out, "search: the regime where the paper's theorems hold", command_line(parser.prog, argv), sections,
                 SEARCH_FIGURES)
    print(f"results in {out}, on one page in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
