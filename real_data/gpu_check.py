"""The numbers only a GPU gives, in one command that fits 8 minutes on an H100/H200.

    python -m real_data.gpu_check --data ../shared/data/cifar10-jpg.tar.gz
    python -m real_data.gpu_check --data PATH --tiny --device cpu    # the same code at toy sizes (the test)

Four checks, each timed, in this order (a later one that fails leaves the earlier ones' numbers):

1. **theory**: the theory trainer's torch backend on the device against the numba backend on the
   CPU from the same seeds (largest relative difference of the trained weights), and the device's
   step time for 10 stacked seeds at the benchmark's large size (n = 2000, P = 50, d = 1000, k = 10,
   m = 5) as GFLOP/s (2 products of 2 n P d S k m flops a step);
2. **fast_net**: the fast net of ``--preset fast`` on the whole training set, one seed: test
   accuracy and seconds;
3. **reproduce**: the fast preset's experiment with 3 seeds, 1 KD and 1 self-KD student and an
   average of 3 (``real_data.reproduce``), its table and wall time;
4. **wrn**: WideResNet-28-10 training steps (batch 128, bf16 autocast and channels_last on CUDA):
   images/s, and the fraction of the device's dense bf16 peak that 3 x 2 x 5.25 GMAC per image is.

It writes ``gpu_check.json`` in ``--out`` (default ``runs/gpu_check-<time>``) after every check
and prints one table at the end. ``--tiny`` shrinks every size (a 200-sample theory problem, 1,000
images for one epoch, the smoke preset, WRN-10-1 at batch 8) so the whole path runs on a CPU in
seconds.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from multiview.checks import check_choice
from multiview.cli import Parser, as_flag, fail, refuse_inert, require_cuda

# Dense bf16 tensor-core peaks (FLOP/s) from the vendor's data sheets, by a substring of the name.
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}

FULL = {"theory": dict(n=2000, P=50, d=1000, S=10, steps=20, cpu_steps=3),
        "fast_net": dict(n_train=0, epochs=None),
        "reproduce": dict(preset="fast", seeds=3, students=1, average_members=3),
        "wrn": dict(depth=28, width=10, batch=128, steps=30, warmup=5)}
TINY = {"theory": dict(n=200, P=10, d=50, S=10, steps=4, cpu_steps=3),
        "fast_net": dict(n_train=1000, epochs=1),
        "reproduce": dict(preset="smoke", seeds=2, students=1, average_members=2),
        "wrn": dict(depth=10, width=1, batch=8, steps=2, warmup=1)}
K, M = 10, 5
# The checks that read the CIFAR data (--data, --cache-dir).
DATA_CHECKS = ("fast_net", "reproduce")
# Flags that act only with some checks: (flag, argparse dest, whether it acts on the checks run, the
# words for when it does not) (multiview.cli.refuse_inert).
INERT_FLAGS = tuple((flag, dest, lambda only: bool(set(DATA_CHECKS) & set(only)),
                     f"unless --only includes {' or '.join(DATA_CHECKS)} (no other check reads the data)")
                    for flag, dest in (("--data", "data"), ("--cache-dir", "cache_dir")))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bf16_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def check_theory(device: str, n: int, P: int, d: int, S: int, steps: int, cpu_steps: int) -> dict:
    """Device against CPU after ``cpu_steps`` steps from the same seeds; the device's step time."""
    import numpy as np

    from theory_sims import LearnerConfig, TrainConfig, train

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, P, d), dtype=np.float32) * 0.05, rng.integers(0, K, n)
    learner = LearnerConfig(k=K, m=M, q=3)

    def run(backend, dev, n_steps):
        _sync(device)
        t0 = time.perf_counter()
        res = train(X, y, range(S), learner, TrainConfig(lr=1.0, steps=n_steps, track_every=0, backend=backend,
                                                         device=dev))
        _sync(device)
        return res, time.perf_counter() - t0

    cpu, _ = run("numba", "cpu", cpu_steps)
    here, _ = run("torch", device, cpu_steps)
    w_cpu, w_dev = cpu.model.W.double().cpu(), here.model.W.double().cpu()
    rel = float((w_dev - w_cpu).abs().max() / w_cpu.abs().max())
    run("torch", device, 1)  # warm-up: kernels compiled, memory allocated
    _, setup = run("torch", device, 0)
    _, total = run("torch", device, steps)
    step_s = max(total - setup, 1e-9) / steps
    flops = 2 * (2 * n * P * d * S * K * M)
    return {"size": dict(n=n, P=P, d=d, S=S, k=K, m=M), "max_rel_diff_vs_cpu": rel, "step_ms": 1e3 * step_s,
            "gflops": flops / step_s / 1e9}


def check_fast_net(data_path: str, device: str, cache_dir, n_train: int, epochs: int | None) -> dict:
    """One fast net of the fast preset on ``n_train`` training images (0: all), the whole test set."""
    import torch

    from real_data import data as rd
    from real_data import reproduce as rp
    from real_data import train as rt
    from real_data.models import make_model

    cfg = rp.configure("fast")
    spec = cfg.spec if epochs is None else dataclasses.replace(cfg.spec, epochs=epochs)
    images = rd.load(data_path, "cifar10", cache_dir=cache_dir).subset(n_train or None, None, seed=0)
    dd = rt.DeviceData(images, device)
    torch.manual_seed(0)
    model = make_model("fast", dd.num_classes, width=cfg.width)
    _sync(device)
    t0 = time.perf_counter()
    record = rt.fit([model], dd, spec, seed=0)
    _sync(device)
    seconds = time.perf_counter() - t0
    acc = float((rt.predict([model], dd.x_test)[0].argmax(-1) == dd.y_test).float().mean())
    return {"train_images": len(dd.y_train), "epochs": spec.epochs, "test_acc": acc, "seconds": seconds,
            "images_per_s": record.get("images_per_s")}


def check_reproduce(data_path: str, device: str, cache_dir, out: Path, preset: str, **overrides) -> dict:
    from real_data import reproduce as rp

    cfg = rp.configure(preset, **overrides)
    t0 = time.perf_counter()
    results = rp.run(cfg, data_path, out, device, cache_dir, log=lambda *a, **k: None)
    rows = rp.table_rows(results, cfg.dataset)
    return {"preset": preset, **overrides, "wall_s": time.perf_counter() - t0,
            "rows": {r["key"]: round(r["test_acc"], 2) for r in rows},
            "distill_per_student_vs_single": results["timing_s"].get("distill_per_student_vs_single")}


def check_wrn(device: str, depth: int, width: int, batch: int, steps: int, warmup: int) -> dict:
    """Training steps of WRN-depth-width on random images: images/s and the fraction of bf16 peak."""
    import torch
    from torch.nn import functional as F

    from real_data.models import WideResNet, macs_per_image

    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    model = WideResNet(depth, width, 10).to(device)
    macs = macs_per_image(model)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    images_per_s = batch * steps / (time.perf_counter() - t0)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = bf16_peak(name) if cuda else None
    achieved = 3 * 2 * macs * images_per_s  # forward + backward (2 products of the forward's size)
    return {"model": f"WRN-{depth}-{width}", "batch": batch, "gmac_per_image": macs / 1e9,
            "images_per_s": images_per_s, "tflops": achieved / 1e12,
            "fraction_of_bf16_peak": None if peak is None else achieved / peak}


def format_table(report: dict) -> str:
    lines = [f"gpu_check on {report['device_name']} ({report['mode']} sizes)", ""]
    t = report.get("theory")
    if t:
        lines.append(f"theory trainer, torch on {report['device']}: {t['step_ms']:.2f} ms a step for "
                     f"{t['size']['S']} seeds ({t['gflops']:.0f} GFLOP/s); max relative weight difference "
                     f"vs numba on CPU {t['max_rel_diff_vs_cpu']:.1e}")
    f = report.get("fast_net")
    if f:
        lines.append(f"fast net, 1 seed, {f['train_images']} images x {f['epochs']} epochs: "
                     f"{100 * f['test_acc']:.2f}% test in {f['seconds']:.1f} s")
    r = report.get("reproduce")
    if r:
        lines.append(f"{r['preset']} preset, {r['seeds']} seeds + {r['students']} KD + {r['students']} self-KD "
                     f"+ average of {r['average_members']}: {r['wall_s']:.0f} s")
        lines += [f"    {key:12} {acc:6.2f}%" for key, acc in r["rows"].items()]
    w = report.get("wrn")
    if w:
        frac = "" if w["fraction_of_bf16_peak"] is None else f", {100 * w['fraction_of_bf16_peak']:.0f}% of bf16 peak"
        lines.append(f"{w['model']} training, batch {w['batch']}: {w['images_per_s']:.0f} images/s "
                     f"({w['tflops']:.1f} TFLOP/s{frac})")
    for name, err in report.get("errors", {}).items():
        lines.append(f"{name}: FAILED ({err})")
    lines.append(f"total {report['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from real_data.data import ENV_VAR

    p = Parser(prog="python -m real_data.gpu_check", description=__doc__)
    p.add_argument("--data", default=None, help=f"the CIFAR-10 data, as for real_data.reproduce (default: ${ENV_VAR})")
    p.add_argument("--cache-dir", default=None, help="where decoded images are cached (default: no cache)")
    p.add_argument("--device", default=None, help="'cuda' or 'cpu' (default: cuda if available, else cpu)")
    p.add_argument("--tiny", action="store_true", help="toy sizes, minutes on a CPU: tests the path, not the GPU")
    p.add_argument("--out", default=None, help="folder for gpu_check.json and the experiment's run (default: "
                                               "runs/gpu_check-<time>)")
    p.add_argument("--only", default=None, help="comma-separated subset of theory, fast_net, reproduce, wrn")
    args = p.parse_args(argv)
    import torch

    from theory_sims.results import start_run, write_json

    try:
        # an empty --device or --only is refused, not read as not given
        device = args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        only = list(FULL) if args.only is None else [c.strip() for c in args.only.split(",")]
        try:
            check_choice("device", device, ("cpu", "cuda"))
            for c in only:
                check_choice("only", c, tuple(FULL))
        except ValueError as err:  # "only must be one of ...": the line names the flag typed
            raise ValueError(as_flag(str(err), names=["device", "only"])) from None
        refuse_inert(args, only, INERT_FLAGS)
        require_cuda(device)
        if args.data == "":
            raise ValueError(f"--data must name the CIFAR-10 data (or leave it out and set ${ENV_VAR}), got ''")
        data_path = args.data if args.data is not None else os.environ.get(ENV_VAR)
        needs_data = set(DATA_CHECKS) & set(only)
        if needs_data and data_path is None:
            raise ValueError(f"--data must name the CIFAR-10 data (or set ${ENV_VAR}) for {', '.join(sorted(needs_data))}")
        if needs_data and not Path(data_path).exists():
            raise ValueError(f"--data: no such file or folder: {data_path}")
        sizes = TINY if args.tiny else FULL
        out = start_run(args.out, None, "gpu_check", {"device": device, "tiny": args.tiny, "only": only,
                                                      "data": None if data_path is None else str(data_path)},
                        resumable=False)
    except ValueError as err:
        p.error(str(err))
    report = {"device": device, "device_name": torch.cuda.get_device_name(0) if device == "cuda" else
              f"CPU, {os.cpu_count()} cores", "mode": "tiny" if args.tiny else "full", "errors": {}}
    t_all = time.perf_counter()
    for name in only:
        print(f"{name} ...", flush=True)
        try:
            if name == "theory":
                report[name] = check_theory(device, **sizes[name])
            elif name == "fast_net":
                report[name] = check_fast_net(str(data_path), device, args.cache_dir, **sizes[name])
            elif name == "reproduce":
                report[name] = check_reproduce(str(data_path), device, args.cache_dir, out / "reproduce", **sizes[name])
            else:
                report[name] = check_wrn(device, **sizes[name])
        except Exception as err:  # noqa: BLE001  (one failed check must not lose the others' numbers)
            report["errors"][name] = f"{type(err).__name__}: {err}"
        report["wall_s"] = time.perf_counter() - t_all
        write_json(out / "gpu_check.json", report)
    print(format_table(report))
    print(f"written: {out / 'gpu_check.json'}")
    if report["errors"]:
        fail(p.prog, f"{len(report['errors'])} check(s) failed: {', '.join(report['errors'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
