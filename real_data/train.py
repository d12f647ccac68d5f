"""Training on device-resident CIFAR: batched augmentation, SGD with Nesterov momentum, schedules,
the three objectives (labels, distillation, training the average) and atomic per-epoch checkpoints.

Objectives, stated once:

* ``ce``: cross-entropy with the labels (optionally label-smoothed).
* ``kd``: ``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_teacher || softmax(z_student / T))``
  with the KL summed over classes and averaged over the batch ("batchmean"); ``p_teacher`` is the
  distillation target of the student's teachers on the same augmented batch, the teachers in eval
  mode: ``softmax(ensemble_output(z / T))`` over their logits z (:func:`distill_target`), which for
  the paper's ensemble (``ensemble="logits"``) is ``softmax(mean_s z_s / T)`` and for
  ``ensemble="softmax"`` the mean of ``softmax(z_s / T)``. The T^2 factor keeps the soft term's
  gradient scale independent of T (Hinton et al.). One job may train several students on the same
  batches, each with its own subset of the teachers (``groups``): every teacher then runs once per
  batch for all of them, and each student's update is the one it would get alone.
* ``average``: the S models of a job are one model whose output is the mean of their logits,
  trained with ``ce`` on that mean (the paper's "training the average").

Randomness: epoch e of a job shuffles and augments with a generator seeded by (seed, e) only, so a
run resumed from the checkpoint of epoch e repeats the uninterrupted run exactly (on CPU; on CUDA
up to the nondeterminism of its kernels).
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from multiview.checks import check_choice, check_float, check_int
from multiview.cli import param
from theory_sims.stats import ENSEMBLES, ensemble_output

SCHEDULES = ("step", "onecycle")
OBJECTIVES = ("ce", "kd", "average")


@dataclass(frozen=True)
class TrainSpec:
    """How one job trains; serialised into config.json and every checkpoint."""

    epochs: int = param("passes over the training set", 10)
    batch_size: int = param("mini-batch size", 512)
    lr: float = param("peak learning rate", 0.2)
    momentum: float = param("Nesterov momentum", 0.9)
    weight_decay: float = param("L2 weight decay (not on batch-norm and bias parameters)", 5e-4)
    schedule: str = param("'step' (x0.2 at 30%%, 60%%, 80%% of training: the WRN schedule) or "
                          "'onecycle' (linear warm-up, then linear decay to 0)", "onecycle")
    warmup: float = param("onecycle: fraction of training spent warming up", 0.2)
    label_smoothing: float = param("label smoothing of the CE terms", 0.0)
    crop_pad: int = param("pad-and-crop translation in pixels (0: none)", 4)
    flip: bool = param("random horizontal flips", True)
    cutout: int = param("side of a random square zeroed per image (0: none)", 0)
    kd_temperature: float = param("KD temperature T", 4.0)
    kd_alpha: float = param("KD weight of the label CE; 1 - alpha on the teacher", 0.1)
    ensemble: str = param("how models combine, in the ensemble rows and in a KD teacher: 'logits' (the mean of "
                          "their logits, the paper's definition) or 'softmax' (the mean of their probabilities)",
                          "logits")
    bf16: bool = param("bf16 autocast on CUDA (ignored on CPU)", True)
    channels_last: bool = param("channels_last memory format on CUDA", True)
    compile: bool = param("torch.compile the models", False)

    def __post_init__(self):
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_float("warmup", self.warmup, 0.0, 1.0, hi_open=True)
        check_float("label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        check_int("crop_pad", self.crop_pad, 0, 16)
        check_int("cutout", self.cutout, 0, 32)
        check_float("kd_temperature", self.kd_temperature, 0.0, lo_open=True)
        check_float("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_choice("ensemble", self.ensemble, ENSEMBLES)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ data on device


def pixels(images, device="cpu") -> torch.Tensor:
    """uint8 images (N, 32, 32, 3) as a float tensor (N, 3, 32, 32) in [0, 1] on ``device``."""
    return torch.as_tensor(images).to(device).permute(0, 3, 1, 2).float().div_(255)


def normalise(images, mean, std, device="cpu") -> torch.Tensor:
    """uint8 images (N, 32, 32, 3) standardised per channel with ``mean``, ``std`` (3 values each)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return (pixels(images, device) - m) / s


class DeviceData:
    """Both splits as normalised float tensors on ``device`` (N, 3, 32, 32), labels as int64."""

    def __init__(self, data, device: str = "cpu"):
        self.device = torch.device(device)
        x_train = pixels(data.x_train, self.device)
        self.mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        self.std = x_train.std(dim=(0, 2, 3), keepdim=True)
        self.x_train = (x_train - self.mean) / self.std
        self.x_test = normalise(data.x_test, self.mean, self.std, self.device)
        self.y_train = torch.as_tensor(data.y_train).to(self.device)
        self.y_test = torch.as_tensor(data.y_test).to(self.device)
        self.num_classes = data.num_classes


def augment(x: torch.Tensor, gen: torch.Generator, crop_pad: int = 4, flip: bool = True, cutout: int = 0) -> torch.Tensor:
    """Batched random translation (zero padding ``crop_pad``, random crop), horizontal flip and
    cutout, all on ``x``'s device with random numbers from ``gen``."""
    n, c, h, w = x.shape
    dev = x.device
    if crop_pad:
        padded = F.pad(x, (crop_pad,) * 4)
        dy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (n, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (n, 1, 1, w)
        x = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                   rows, cols]
    if flip:
        mask = torch.rand(n, generator=gen, device=dev) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if cutout:
        cy = torch.randint(0, h, (n,), generator=gen, device=dev)[:, None, None]
        cx = torch.randint(0, w, (n,), generator=gen, device=dev)[:, None, None]
        yy = torch.arange(h, device=dev)[None, :, None]
        xx = torch.arange(w, device=dev)[None, None, :]
        half = cutout // 2
        hole = (yy >= cy - half) & (yy < cy - half + cutout) & (xx >= cx - half) & (xx < cx - half + cutout)
        x = x * (~hole)[:, None].to(x.dtype)
    return x


# ------------------------------------------------------------------------------------------- losses


def kd_loss(student: torch.Tensor, teacher_probs: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * CE(student, y) + (1 - alpha) * T^2 * KL(teacher || softmax(student / T)), batchmean."""
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    kl = (teacher_probs * (teacher_probs.clamp_min(1e-12).log() - log_q)).sum(dim=-1).mean()
    ce = F.cross_entropy(student.float(), y, label_smoothing=label_smoothing)
    return alpha * ce + (1 - alpha) * temperature**2 * kl


def teacher_logits(models, x: torch.Tensor, autocast: bool = False) -> torch.Tensor:
    """Logits (S, N, k), float32, of ``models`` (in eval mode, no gradient) on ``x``."""
    with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
        return torch.stack([m(x).float() for m in models])


def distill_target(logits: torch.Tensor, temperature: float, ensemble: str = "logits") -> torch.Tensor:
    """The KD target of teachers with ``logits`` (S, N, k): ``softmax(ensemble_output(z / T))``."""
    return F.softmax(ensemble_output(logits / temperature, ensemble), dim=-1)


# ------------------------------------------------------------------------------------------ training


def lr_at(step: int, total: int, spec: TrainSpec) -> float:
    frac = step / max(total, 1)
    if spec.schedule == "step":
        return spec.lr * 0.2 ** sum(frac >= m for m in (0.3, 0.6, 0.8))
    warm = spec.warmup
    if warm and frac < warm:
        return spec.lr * frac / warm
    return spec.lr * max(0.0, (1 - frac) / (1 - warm))


def _optimizer(models, spec: TrainSpec) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for m in models:
        for p in m.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.momentum > 0)


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    from theory_sims.results import write_atomic

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def read_checkpoint(path, device="cpu", what: str = "checkpoint") -> dict:
    """``torch.load`` of checkpoint ``path``; ValueError in one line, naming it as ``what`` (a CLI
    passes its flag), where the file is not one (cut short by a crash during a write, another file)."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except MemoryError:  # a whole checkpoint too large here is not a damaged one
        raise
    except Exception as err:  # noqa: BLE001 (torch.load raises many kinds on a bad file)
        why = (str(err).splitlines() or [""])[0].split(". ")[0]
        raise ValueError(f"{what} {path}: not a torch checkpoint, or a damaged one ({type(err).__name__}: {why})") from None


def fit(models: list[nn.Module], data: DeviceData, spec: TrainSpec, seed: int, objective: str = "ce",
        teachers: list[nn.Module] | None = None, checkpoint: Path | None = None, progress: bool = False,
        desc: str = "train", stop_after: int | None = None, meta: dict | None = None,
        groups: list[list[int]] | None = None) -> dict:
    """Train ``models`` (one for ``ce``; one or several students for ``kd``, student i distilled
    from ``teachers[j] for j in groups[i]``, by default all of them; S for ``average``) in place.

    With ``checkpoint``, the state after every epoch is written there atomically and an existing
    checkpoint is resumed from. ``stop_after`` ends the call after that many epochs of this call
    (to simulate a killed run in tests). Returns the job's record (``epochs_done``,
    ``train_loss`` per epoch, ``wall_s``, ``cpu_s`` (this process's CPU time: on a CPU, what the
    training cost whatever else loads the machine), ``images_per_s``).
    """
    check_choice("objective", objective, OBJECTIVES)
    if objective == "kd" and not teachers:
        raise ValueError("teachers must be given for objective='kd'")
    if objective == "ce" and len(models) != 1:
        raise ValueError(f"objective 'ce' trains one model per job, got {len(models)}")
    if objective == "kd":
        groups = [tuple(range(len(teachers)))] * len(models) if groups is None else [tuple(g) for g in groups]
        if len(groups) != len(models) or not all(g and all(0 <= t < len(teachers) for t in g) for g in groups):
            raise ValueError(f"groups must give each of the {len(models)} students a non-empty list of teacher "
                             f"indices in [0, {len(teachers) - 1}], got {groups}")
    dev = data.device
    cuda = dev.type == "cuda"
    autocast = cuda and spec.bf16
    for m in models:
        m.to(dev)
        if cuda and spec.channels_last:
            m.to(memory_format=torch.channels_last)
    if teachers:
        for t in teachers:
            t.to(dev).eval()
    opt = _optimizer(models, spec)
    record = {"epochs_done": 0, "train_loss": [], "wall_s": 0.0, "cpu_s": 0.0}
    if checkpoint is not None and Path(checkpoint).exists():
        state = read_checkpoint(checkpoint, dev)
        for m, sd in zip(models, state["models"]):
            m.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        record = state["record"]
        record.setdefault("cpu_s", 0.0)  # checkpoints written before the CPU time was recorded
    forward = [torch.compile(m) if spec.compile else m for m in models]

    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / spec.batch_size)
    total = steps_per_epoch * spec.epochs
    from tqdm.auto import tqdm

    epochs = range(record["epochs_done"], spec.epochs)
    if stop_after is not None:
        epochs = epochs[:stop_after]
    for epoch in tqdm(epochs, desc=desc, disable=not progress, leave=False):
        t0, c0 = time.perf_counter(), time.process_time()  # wall, and this process's CPU (every thread)
        gen = torch.Generator(device=dev).manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen, device=dev)
        for m in models:
            m.train()
        loss_sum = torch.zeros((), device=dev)
        for i in range(steps_per_epoch):
            idx = order[i * spec.batch_size : (i + 1) * spec.batch_size]
            xb = augment(data.x_train[idx], gen, spec.crop_pad, spec.flip, spec.cutout)
            if cuda and spec.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = data.y_train[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + i, total, spec)
            if objective == "kd":  # every teacher once per batch; each student's loss on its own target
                z = teacher_logits(teachers, xb, autocast)
                targets = {g: distill_target(z[list(g)], spec.kd_temperature, spec.ensemble) for g in set(groups)}
                with torch.autocast(dev.type, torch.bfloat16, enabled=autocast):
                    students = [f(xb).float() for f in forward]
                loss = sum(kd_loss(zs, targets[g], yb, spec.kd_temperature, spec.kd_alpha, spec.label_smoothing)
                           for zs, g in zip(students, groups))
            else:
                with torch.autocast(dev.type, torch.bfloat16, enabled=autocast):
                    if objective == "average":
                        logits = torch.stack([f(xb) for f in forward]).float().mean(dim=0)
                    else:
                        logits = forward[0](xb).float()
                if logits.dim() == 3:  # a stacked module: the sum of its members' losses
                    loss = sum(F.cross_entropy(z, yb, label_smoothing=spec.label_smoothing) for z in logits)
                else:
                    loss = F.cross_entropy(logits, yb, label_smoothing=spec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
        if cuda:
            torch.cuda.synchronize()
        record["train_loss"].append(float(loss_sum) / n)
        record["epochs_done"] = epoch + 1
        record["wall_s"] += time.perf_counter() - t0
        record["cpu_s"] += time.process_time() - c0
        if checkpoint is not None:
            save_atomic({"models": [m.state_dict() for m in models], "optimizer": opt.state_dict(),
                         "record": record, "spec": spec.to_dict(), "seed": seed, "objective": objective,
                         "meta": meta or {}}, checkpoint)
    if record["wall_s"] > 0:
        record["images_per_s"] = n * record["epochs_done"] / record["wall_s"]
    return record


def predict(models: list[nn.Module], x: torch.Tensor, batch_size: int = 1000, bf16: bool = True) -> torch.Tensor:
    """Logits of every model on ``x`` without augmentation: float32 tensor (S, N, k) on x's device."""
    autocast = x.device.type == "cuda" and bf16
    out = []
    for m in models:
        m.eval()
        with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            out.append(torch.cat([m(x[a : a + batch_size]).float() for a in range(0, len(x), batch_size)]))
    return torch.stack(out)


def load_models(checkpoint, device: str = "cpu", what: str = "checkpoint") -> tuple[list[nn.Module], dict]:
    """The models of a job checkpoint written by :func:`fit` from ``real_data.reproduce``, in eval
    mode, and the checkpoint's ``meta`` (architecture, normalisation, class names); errors name the
    file as ``what`` (a CLI passes its flag)."""
    from real_data.baselines import wrap
    from real_data.models import make_model

    path = Path(checkpoint)
    if not path.exists():
        raise ValueError(f"{what}: no such file: {path}")
    state = read_checkpoint(path, device, what)
    try:
        meta = state["meta"]
        models = []
        for sd in state["models"]:
            m = make_model(meta["model"], meta["num_classes"], meta["depth"], meta["width"], meta["dropout"])
            m = wrap(m, meta.get("mode", "full"), meta["num_classes"])
            m.load_state_dict(sd)
            models.append(m.to(device).eval())
    except (KeyError, RuntimeError, EOFError, OSError, TypeError, ValueError) as err:
        why = (str(err).splitlines() or [""])[0]  # load_state_dict's own message runs over many lines
        raise ValueError(f"{what} {path}: not a real_data.reproduce job checkpoint ({type(err).__name__}: {why})") from None
    return models, meta
