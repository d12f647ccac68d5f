"""Training throughput of the real-data networks (pytest-benchmark), on CUDA when present.

Run: ``pytest benchmarks/test_real_data_speed.py -s`` (not part of the test suite). Prints images/s
of one training step (forward, backward, Nesterov SGD update, batched augmentation included) and,
on CUDA, the fraction of the GPU's bf16 dense peak it reaches: 3 x 2 x (multiply-adds per image)
x images/s / peak, counting forward and backward as three forward passes.
"""

import pytest
import torch

from real_data import train as rt
from real_data.models import macs_per_image, make_model

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by device-name fragment.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

CASES = {  # name: (model kwargs, batch size)
    "fast w=1.0": (dict(name="fast", width=1.0), 512),
    "fast w=0.25": (dict(name="fast", width=0.25), 256),
    "wrn-28-10": (dict(name="wrn", depth=28, width=10), 128),
}


def peak_flops() -> float | None:
    if DEVICE != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


@pytest.mark.parametrize("case", list(CASES))
def test_training_step_throughput(benchmark, case):
    kwargs, batch = CASES[case]
    if case == "wrn-28-10" and DEVICE == "cpu":
        pytest.skip("WRN-28-10 is a GPU network (about 7 s per 128-image step on 2 CPU cores)")
    name = kwargs.pop("name")
    model = make_model(name, 10, **kwargs).to(DEVICE)
    cuda = DEVICE == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    spec = rt.TrainSpec()
    opt = rt._optimizer([model], spec)
    x = torch.randn(batch, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def step():
        xb = rt.augment(x, gen)
        if cuda:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(DEVICE, torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(xb).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(3):
        step()  # warm-up (cuDNN autotuning, allocator)
    benchmark.pedantic(step, rounds=10 if cuda else 3, iterations=1)
    ips = batch / benchmark.stats["median"]
    macs = macs_per_image(model)
    line = f"{case}: {ips:,.0f} images/s on {DEVICE}, {macs / 1e9:.3f} GMAC per image"
    peak = peak_flops()
    if peak:
        line += f", {6 * macs * ips / peak:.1%} of the bf16 peak"
    print("\n" + line)


def test_stacked_against_a_loop(benchmark):
    """5 fast nets (width 0.25) trained one step each: a loop over the nets against one stacked
    network with grouped convolutions. Prints the loop / stacked time ratio (> 1: stacking wins)."""
    import time

    from real_data.models import FastNet, StackedFastNet

    torch.manual_seed(0)
    nets = [FastNet(10, width=0.25).to(DEVICE) for _ in range(5)]
    stacked = StackedFastNet(nets).to(DEVICE)
    x = torch.randn(256, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (256,), device=DEVICE)
    opt_loop = rt._optimizer(nets, rt.TrainSpec())
    opt_stack = rt._optimizer([stacked], rt.TrainSpec())

    def loop_step():
        for net in nets:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
        opt_loop.step()
        opt_loop.zero_grad(set_to_none=True)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def stacked_step():
        loss = sum(torch.nn.functional.cross_entropy(z, y) for z in stacked(x))
        loss.backward()
        opt_stack.step()
        opt_stack.zero_grad(set_to_none=True)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def timed(fn, n=5):
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    loop_s, stacked_s = timed(loop_step), timed(stacked_step)
    benchmark.pedantic(stacked_step, rounds=3, iterations=1)
    print(f"\n5 fast nets (w=0.25, batch 256) on {DEVICE}: loop {1000 * loop_s:.0f} ms, stacked "
          f"{1000 * stacked_s:.0f} ms per step: loop / stacked = {loop_s / stacked_s:.2f}")
