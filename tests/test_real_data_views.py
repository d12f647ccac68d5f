"""real_data.visualize and the random-feature / linearised baselines, on a tiny trained run."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_png_has_content

from real_data import train as rt
from real_data import visualize as vz
from real_data.baselines import LinearisedNet, RandomFeatureNet, calibrate_batch_norm, wrap
from real_data.models import FastNet
from real_data.reproduce import main as reproduce_main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, image_tree):
    out = tmp_path_factory.mktemp("run")
    assert reproduce_main(["--preset", "smoke", "--data", str(image_tree), "--out", str(out), "--quiet",
                           "--device", "cpu", "--epochs", "3"]) == 0
    return out


def test_visualize_writes_channel_compare_and_ablation_figures(smoke_run, image_tree, tmp_path):
    out = tmp_path / "vis"
    ck = smoke_run / "checkpoints"
    assert vz.main(["--checkpoint", str(ck / "single-0.pt"), "--data", str(image_tree), "--auto", "3", "--top", "4",
                    "--am-steps", "5", "--n-test", "80", "--compare", str(ck / "single-1.pt"), str(ck / "kd-0.pt"),
                    "--class", "class2", "--ablation", "--out", str(out)]) == 0
    for name in ("channels.png", "compare.png", "ablation.png"):
        assert_png_has_content(out / name)
        assert (out / name).with_suffix(".pdf").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["channels"]) == 3 and summary["layer"] == "stages.2"
    assert [r["network"] for r in summary["compare"]] == ["single-0", "single-1", "kd-0"]
    assert all(r["channels_for_half_the_logit"] >= 1 for r in summary["compare"])
    random_curve = np.asarray(summary["ablation"]["random"])
    assert random_curve.shape == (10, 4)
    rows = (out / "ablation.csv").read_text().splitlines()
    assert len(rows) == 1 + 20 and rows[0].startswith("order,fraction,class0")
    # the folder now holds this run: a second visualize there is refused, its files untouched
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(SystemExit) as exc:
        vz.main(["--checkpoint", str(ck / "single-0.pt"), "--data", str(image_tree), "--out", str(out)])
    assert exc.value.code == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_ablation_at_zero_is_the_plain_accuracy_and_all_off_is_one_prediction(smoke_run, image_tree):
    models, meta = rt.load_models(smoke_run / "checkpoints" / "single-0.pt")
    net = models[0]
    x = torch.randn(60, 3, 32, 32)
    y = torch.arange(60) % 4
    curves = vz.ablation_curves(net, "stages.2", x, y, 4, [0.0, 1.0])
    pred = net(x).argmax(-1)
    want = [float((pred[y == c] == c).float().mean()) for c in range(4)]
    np.testing.assert_allclose(curves[0], want)
    # every channel off: the network sees the same (zero) features for every input
    assert sorted(curves[1].round(6).tolist()).count(0.0) >= 3


def test_activation_maximisation_excites_its_channel():
    torch.manual_seed(0)
    net = calibrate_batch_norm(FastNet(4, width=0.125), torch.randn(64, 3, 32, 32))
    mean, std = [0.5] * 3, [0.25] * 3

    def normalise(img):
        return (torch.as_tensor(img).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25

    # the starting point of the ascent (seed 1): small noise around the mean image
    start = vz.to_uint8(0.1 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1)), mean, std)
    for channel in (3, 5):
        img = vz.activation_maximisation(net, "stages.1", channel, mean, std, steps=96, seed=1)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        maps, _ = vz.activations(net, "stages.1", torch.cat([normalise(img), normalise(start)]))
        act = maps[:, channel].mean(dim=(1, 2))
        assert act[0] > 1.5 * act[1] and act[0] > act[1] + 0.1


def test_selectivity_finds_a_planted_channel_and_half_count_by_hand():
    maps = torch.rand(100, 6, 2, 2)
    y = torch.arange(100) % 5
    maps[y == 2, 4] += 3.0
    assert vz.class_selective_channels(maps, y, 1) == [4]
    assert vz.channels_for_half(np.array([4.0, 3.0, 2.0, 1.0, -1.0])) == 2  # 4 + 3 >= 10 / 2
    assert vz.channels_for_half(np.array([1.0] * 10)) == 5


@pytest.mark.parametrize(
    "extra, message",
    [(["--layer", "nope"], "--layer must be one of"),
     (["--class", "zebra", "--compare", "{run}/checkpoints/single-1.pt"], "--class must be one of class0"),
     (["--class", "class2"], "--class does nothing without --compare"),  # it would be ignored
     (["--compare"], "--compare: expected at least one argument"),
     (["--channels", "999"], "--channels must be in [0, "),
     (["--top", "0"], "--top must be an integer >= 1, got 0")],
)
def test_visualize_bad_flags_exit_2(extra, message, smoke_run, image_tree, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        vz.main(["--checkpoint", str(smoke_run / "checkpoints" / "single-0.pt"), "--data", str(image_tree),
                 "--am-steps", "0", "--out", str(tmp_path / "v")] + [e.format(run=smoke_run) for e in extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize("flag", ["--checkpoint", "--compare"])
def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_its_flag(flag, smoke_run, image_tree, capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    good = str(smoke_run / "checkpoints" / "single-0.pt")
    argv = ["--checkpoint", str(notes) if flag == "--checkpoint" else good, "--data", str(image_tree),
            "--am-steps", "0", "--out", str(tmp_path / "v")]
    with pytest.raises(SystemExit) as exc:
        vz.main(argv + (["--compare", str(notes)] if flag == "--compare" else []))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {notes}: not a torch checkpoint" in err
    assert not (tmp_path / "v").exists()


def test_missing_checkpoint_is_one_line(capsys, image_tree):
    with pytest.raises(SystemExit):
        vz.main(["--checkpoint", "/nonexistent.pt", "--data", str(image_tree)])
    assert "checkpoint: no such file: /nonexistent.pt" in capsys.readouterr().err


def test_random_features_train_only_the_read_out():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    rf = wrap(FastNet(4, width=0.125), "random_features", 4, x[:32])
    frozen = {k: v.clone() for k, v in rf.net.state_dict().items()}
    head = rf.fc.weight.detach().clone()
    from real_data.data import ImageData

    data = rt.DeviceData(ImageData(np.zeros((64, 32, 32, 3), np.uint8) + np.arange(64, dtype=np.uint8)[:, None, None, None],
                                   np.arange(64) % 4, np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, np.int64),
                                   list("abcd"), "t"))
    rt.fit([rf], data, rt.TrainSpec(epochs=1, batch_size=16), seed=0)
    for k, v in rf.net.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert not torch.equal(rf.fc.weight, head)
    assert isinstance(rf, RandomFeatureNet)


def test_linearised_net_is_the_first_order_expansion():
    torch.manual_seed(0)
    net = FastNet(3, width=0.125).double()
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    calibrate_batch_norm(net, x)
    lin = LinearisedNet(net)
    torch.testing.assert_close(lin(x), net(x))  # delta = 0: the network itself
    direction = [torch.randn_like(p) * 1e-3 for p in lin.delta]
    with torch.no_grad():
        for d, p in zip(direction, lin.delta):
            p.copy_(d)
    eps = 1e-4
    moved = FastNet(3, width=0.125).double()
    moved.load_state_dict(net.state_dict())
    with torch.no_grad():
        for p, d in zip(moved.parameters(), direction):
            p.add_(eps * d)
    finite_diff = net(x) + (moved.eval()(x) - net(x)) / eps
    torch.testing.assert_close(lin(x), finite_diff, rtol=1e-4, atol=1e-6)


TIMING = ("wall_s", "cpu_s", "images_per_s")  # what may differ between two runs of the same jobs


def without_timings(results: dict) -> dict:
    out = {k: v for k, v in results.items() if k not in ("timing_s", "throughput", "jobs")}
    out["jobs"] = {name: {k: v for k, v in rec.items() if k not in TIMING} for name, rec in results["jobs"].items()}
    return out


def test_reproduce_in_ntk_mode_resumes_to_the_same_result(tmp_path, image_tree, monkeypatch, capsys):
    args = ["--preset", "smoke", "--data", str(image_tree), "--device", "cpu", "--mode", "ntk",
            "--seeds", "2", "--epochs", "2", "--n-train", "48", "--n-test", "24", "--batch-size", "24"]
    whole = tmp_path / "whole"
    assert reproduce_main(args + ["--quiet", "--out", str(whole)]) == 0
    res = json.loads((whole / "results.json").read_text())
    assert 0 <= res["ensemble"]["test_acc"] <= 1 and len(res["individual"]["test_acc"]) == 2
    cfg = json.loads((whole / "config.json").read_text())
    assert cfg["experiment"]["mode"] == "ntk"
    models, meta = rt.load_models(whole / "checkpoints" / "single-0.pt")
    assert isinstance(models[0], LinearisedNet) and meta["mode"] == "ntk"

    # The same run killed during the average job's second epoch (the last job): its first epoch's
    # checkpoint is on disk, its record is not; the distill job's record and checkpoints are then
    # deleted too, as if it had never run.
    class Killed(Exception):
        pass

    real_fit = rt.fit

    def killed_after_one_epoch(*a, **k):
        if a[4] == "average":
            real_fit(*a, **{**k, "stop_after": 1})
            raise Killed
        return real_fit(*a, **k)

    cut = tmp_path / "cut"
    monkeypatch.setattr(rt, "fit", killed_after_one_epoch)
    with pytest.raises(Killed):
        reproduce_main(args + ["--quiet", "--out", str(cut)])
    monkeypatch.undo()
    ckpt, jobs = cut / "checkpoints", cut / "jobs"
    assert rt.read_checkpoint(ckpt / "average.pt")["record"]["epochs_done"] == 1
    assert not (jobs / "average.json").exists() and not (cut / "results.json").exists()
    (jobs / "distill.json").unlink()
    for name in ("distill", "kd-0", "self_kd-0"):
        (ckpt / f"{name}.pt").unlink()
    kept = [ckpt / "single-0.pt", ckpt / "single-1.pt", jobs / "single-0.json", jobs / "single-1.json"]
    stamps = {p: p.stat().st_mtime_ns for p in kept}

    # --resume trains only what is missing: the average's second epoch, both epochs of distill
    written = []
    real_save = rt.save_atomic

    def counting_save(obj, path):
        written.append(path.name)
        return real_save(obj, path)

    monkeypatch.setattr(rt, "save_atomic", counting_save)
    capsys.readouterr()
    assert reproduce_main(["--resume", str(cut), "--data", str(image_tree), "--device", "cpu"]) == 0
    monkeypatch.undo()
    assert "2 of 4 jobs already have records" in capsys.readouterr().out
    assert sorted(written) == ["average.pt", "distill.pt", "distill.pt", "kd-0.pt", "self_kd-0.pt"]
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps  # the finished jobs were not touched
    again = json.loads((cut / "results.json").read_text())
    assert again["timing_s"]["earlier_processes"]["jobs"] == 2
    assert without_timings(again) == without_timings(res)  # the uninterrupted run's numbers, every one


@pytest.mark.parametrize("module", ["real_data.reproduce", "real_data.visualize"])
def test_help_documents_every_flag(module):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    for flag in (["--preset", "--resume", "--mode", "--epochs", "--kd-temperature", "--schedule"]
                 if module.endswith("reproduce") else ["--checkpoint", "--auto", "--compare", "--ablation"]):
        assert flag in done.stdout


def test_table_compares_each_mode_with_the_papers_matching_row():
    from real_data.reproduce import format_table, table_rows

    res = {"individual": {"mean": 0.5, "std": 0.01}, **{k: {"test_acc": 0.6} for k in
                                                        ("ensemble", "kd", "self_kd", "average", "kd_ensemble")}}
    full = table_rows(res, "cifar10")
    rf = table_rows(res, "cifar100", "random_features")
    assert full[0]["paper"] == 96.70 and full[0]["fast_replication"] == 93.33
    assert rf[4]["key"] == "average" and rf[4]["paper"] == 41.47 and rf[0]["fast_replication"] is None
    assert rf[1]["gain_over_single"] == pytest.approx(10.0)
    assert "paper RF (NTK)" in format_table(rf, "random_features")


def test_ablation_legend_sits_below_the_curves():
    fig = vz.ablation_figure(np.linspace(0, 0.9, 4), {"random": np.full((4, 3), 0.5), "most active": np.zeros((4, 3))},
                             ["a", "b", "c"])
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(legend.y1 <= ax.get_window_extent().y0 for ax in fig.axes)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_ablation_figure_says_from_where_predictions_collapse_onto_one_class():
    """ablation.png drew flat lines at 0 and 1 without saying why: the panel now names the fraction
    from which every prediction is one class (and that class), and says nothing where none is."""
    from real_data.visualize import ablation_figure, collapse_fraction

    fractions = [0.0, 0.25, 0.5, 0.75, 1.0]
    acc = np.array([[0.8, 0.7, 0.9], [0.6, 0.5, 0.4], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert collapse_fraction(fractions, acc) == 0.5
    assert collapse_fraction(fractions, np.full((5, 3), 0.5)) is None
    flicker = acc.copy()
    flicker[3] = [0.2, 0.7, 0.1]  # collapsed at 0.5, not at 0.75: it collapses for good only at 1.0
    assert collapse_fraction(fractions, flicker) == 1.0
    fig = ablation_figure(fractions, {"random": acc, "most active": np.full((5, 3), 0.5)}, ["cat", "dog", "ship"])
    titles = [ax.get_title() for ax in fig.axes]
    assert "from 50% zeroed every prediction is dog" in titles[0] and "every prediction" not in titles[1]
