"""real_data: loaders (official format, image folders, corrupt inputs, cache), augmentation, the KD
loss by hand, the networks, resume equals uninterrupted, and a smoke run of the whole experiment."""

import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_png_has_content, random_images
from PIL import Image

from real_data import data as rd
from real_data import train as rt
from real_data.models import (
    FastNet,
    WideResNet,
    count_parameters,
    macs_per_image,
    make_model,
)
from real_data.reproduce import main as reproduce_main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def batch_bytes(x, y, label_key="labels"):
    flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return pickle.dumps({"data": flat, label_key: [int(v) for v in y]})


def write_official_cifar10(root: Path, as_tar: bool) -> tuple[Path, dict]:
    """A small archive in the official layout: 5 train batches of 4 images and a test batch of 6."""
    parts, expected = {}, {"train": [], "test": None}
    for i in range(1, 6):
        x, y = random_images(4, i)
        parts[f"data_batch_{i}"] = batch_bytes(x, y)
        expected["train"].append((x, y))
    x, y = random_images(6, 9)
    parts["test_batch"] = batch_bytes(x, y)
    expected["test"] = (x, y)
    parts["batches.meta"] = pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    if not as_tar:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, raw in parts.items():
            (folder / name).write_bytes(raw)
        return folder, expected
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in parts.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path, expected


@pytest.mark.parametrize("as_tar", [True, False])
def test_official_format_is_read_in_order(tmp_path, as_tar):
    path, expected = write_official_cifar10(tmp_path, as_tar)
    d = rd.load(path, "cifar10", verify=False)
    np.testing.assert_array_equal(d.x_train, np.concatenate([x for x, _ in expected["train"]]))
    np.testing.assert_array_equal(d.y_train, np.concatenate([y for _, y in expected["train"]]))
    np.testing.assert_array_equal(d.x_test, expected["test"][0])
    assert d.classes == [f"c{i}" for i in range(10)] and d.x_train.dtype == np.uint8


def test_md5_is_checked_against_the_published_sums(tmp_path):
    path, _ = write_official_cifar10(tmp_path, as_tar=True)
    with pytest.raises(rd.DataError, match=r"cifar-10-python.tar.gz: md5 .* does not match the published archive md5"):
        rd.load(path, "cifar10")
    folder, _ = write_official_cifar10(tmp_path / "f", as_tar=False)
    with pytest.raises(rd.DataError, match=r"data_batch_1: md5 .* does not match the published md5 c99cafc1"):
        rd.load(folder, "cifar10")


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x, y = random_images(5, 0)
    for split in ("train", "test"):
        (folder / split).write_bytes(pickle.dumps({"data": x.transpose(0, 3, 1, 2).reshape(5, -1),
                                                   "fine_labels": list(range(5)), "coarse_labels": [7] * 5}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)],
                                                "coarse_label_names": [f"c{i}" for i in range(20)]}))
    fine = rd.load(folder, "cifar100", verify=False)
    coarse = rd.load(folder, "cifar100", labels="coarse", verify=False)
    assert fine.y_train.tolist() == [0, 1, 2, 3, 4] and fine.num_classes == 100
    assert coarse.y_test.tolist() == [7] * 5 and coarse.num_classes == 20
    np.testing.assert_array_equal(fine.x_train, x)


def write_image_folder(root: Path, fmt="PNG", corrupt: str | None = None) -> dict:
    expected = {}
    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(("cat", "airplane")):  # sorted: airplane = 0, cat = 1
            d = root / split / cls
            d.mkdir(parents=True)
            x, _ = random_images(n, 100 * (split == "test") + c)
            for i in range(n):
                Image.fromarray(x[i]).save(d / f"{i:04d}.png", format=fmt)
            expected[(split, cls)] = x
    if corrupt:
        (root / corrupt).write_bytes(b"\xff\xd8 this is not an image")
    return expected


def test_image_folder_and_its_tar_gz_give_the_same_arrays(tmp_path):
    expected = write_image_folder(tmp_path / "tree" / "cifar")
    folder = rd.load(tmp_path / "tree" / "cifar")
    assert folder.classes == ["airplane", "cat"]
    np.testing.assert_array_equal(folder.x_train[:3], expected[("train", "airplane")])  # lossless PNG
    assert folder.y_train.tolist() == [0, 0, 0, 1, 1, 1] and folder.y_test.tolist() == [0, 0, 1, 1]
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "cifar", arcname="cifar")
    packed = rd.load(archive)
    np.testing.assert_array_equal(packed.x_train, folder.x_train)
    np.testing.assert_array_equal(packed.y_test, folder.y_test)


def test_corrupt_truncated_and_missing_inputs_name_the_file(tmp_path):
    write_image_folder(tmp_path / "bad", corrupt="train/cat/0001.png")
    with pytest.raises(rd.DataError, match=r"train/cat/0001.png: cannot decode the image"):
        rd.load(tmp_path / "bad")
    path, _ = write_official_cifar10(tmp_path / "t", as_tar=True)
    raw = path.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(rd.DataError, match=r"cut.tar.gz: truncated or corrupt archive"):
        rd.load(cut, verify=False)
    with pytest.raises(rd.DataError, match=r"nowhere.tar.gz: no such file or folder"):
        rd.load(tmp_path / "nowhere.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(rd.DataError, match=r"empty: neither the official CIFAR python format nor an image folder"):
        rd.load(tmp_path / "empty")


def test_cache_is_used_and_a_half_written_cache_is_rebuilt(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = rd.load(tmp_path / "tree", cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    calls = []
    monkeypatch.setattr(rd, "_load_uncached", lambda *a: calls.append(a) or first)
    again = rd.load(tmp_path / "tree", cache_dir=cache)
    assert calls == [] and again.classes == first.classes
    np.testing.assert_array_equal(again.x_train, first.x_train)
    files[0].write_bytes(files[0].read_bytes()[:100])  # a cache cut short is never used
    rd.load(tmp_path / "tree", cache_dir=cache)
    assert len(calls) == 1


@pytest.mark.skipif(not SHARED.exists(), reason="the shared CIFAR-10 JPEG archive is not here")
def test_shared_cifar10_jpeg_archive(tmp_path):
    assert hashlib.sha256(SHARED.read_bytes()).hexdigest().startswith("45b041e867f5a40f")
    d = rd.load(SHARED, cache_dir=tmp_path)
    assert d.x_train.shape == (50000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(d.y_train).tolist() == [5000] * 10 and d.classes[0] == "airplane"
    np.testing.assert_allclose(d.x_train.reshape(-1, 3).mean(0), [125.27, 122.93, 113.86], atol=0.01)


def test_augment_translates_flips_and_cuts_out():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    gen = torch.Generator().manual_seed(0)
    out = rt.augment(x, gen, crop_pad=2, flip=False)
    for i in range(2):  # every output is a window of the zero-padded input
        padded = torch.nn.functional.pad(x[i, 0], (2, 2, 2, 2))
        assert any(torch.equal(out[i, 0], padded[a : a + 6, b : b + 6]) for a in range(5) for b in range(5))
    flipped = rt.augment(x, torch.Generator().manual_seed(1), crop_pad=0, flip=True)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    holes = rt.augment(torch.ones(50, 3, 8, 8), torch.Generator().manual_seed(2), crop_pad=0, flip=False, cutout=4)
    zeros = (holes[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 hole, clipped at the border
    assert torch.equal(holes[:, 0], holes[:, 2])  # the same hole in every channel
    again = rt.augment(x, torch.Generator().manual_seed(0), crop_pad=2, flip=False)
    assert torch.equal(again, out)


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    p = torch.tensor([[0.2, 0.5, 0.3]])
    y = torch.tensor([1])
    T, alpha = 2.0, 0.3
    q = np.exp(np.array([0.5, 1.0, 0.25])) / np.exp(np.array([0.5, 1.0, 0.25])).sum()
    kl = float(np.sum([0.2, 0.5, 0.3] * (np.log([0.2, 0.5, 0.3]) - np.log(q))))
    ce = -np.log(np.exp(2.0) / np.exp([1.0, 2.0, 0.5]).sum())
    want = alpha * ce + (1 - alpha) * T**2 * kl
    assert float(rt.kd_loss(s, p, y, T, alpha)) == pytest.approx(want, rel=1e-6)
    # batchmean: the mean of per-sample losses
    two = rt.kd_loss(torch.cat([s, s * 0]), torch.cat([p, p]), torch.tensor([1, 0]), T, alpha)
    one_b = rt.kd_loss(s * 0, p, torch.tensor([0]), T, alpha)
    assert float(two) == pytest.approx((want + float(one_b)) / 2, rel=1e-6)


def test_distill_target_follows_the_ensemble_definition():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    z = rt.teacher_logits([a, b], x)
    assert z.shape == (2, 5, 3) and not z.requires_grad
    # the paper's ensemble averages logits: the target is the softmax of the mean logit over T
    torch.testing.assert_close(rt.distill_target(z, 3.0), torch.softmax((a(x) + b(x)).detach() / 2 / 3, -1))
    # the softmax ensemble averages the members' tempered probabilities
    want = (torch.softmax(a(x) / 3, -1) + torch.softmax(b(x) / 3, -1)).detach() / 2
    torch.testing.assert_close(rt.distill_target(z, 3.0, "softmax"), want)
    assert not torch.allclose(rt.distill_target(z, 3.0), want)  # the two definitions differ
    # one teacher: both definitions are its own tempered softmax
    torch.testing.assert_close(rt.distill_target(z[:1], 3.0, "softmax"), rt.distill_target(z[:1], 3.0))


def test_students_sharing_batches_get_the_updates_they_would_get_alone():
    """The distill job: the teachers run once per batch for all students; each student (its own
    subset of the teachers) ends where training it alone on the same seed would have left it."""
    data = tiny_data()
    spec = rt.TrainSpec(epochs=2, batch_size=16, lr=0.1, kd_temperature=2.0, kd_alpha=0.3)
    teachers = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        teachers.append(FastNet(4, width=0.125))
        rt.fit(teachers[-1:], data, rt.TrainSpec(epochs=1, batch_size=16, lr=0.1), seed=seed)

    def student(seed):
        torch.manual_seed(seed)
        return FastNet(4, width=0.125)

    groups = [[0, 1, 2], [1], [0, 2]]
    together = [student(10 + i) for i in range(3)]
    rt.fit(together, data, spec, seed=7, objective="kd", teachers=teachers, groups=groups)
    for i, g in enumerate(groups):
        alone = student(10 + i)
        rt.fit([alone], data, spec, seed=7, objective="kd", teachers=[teachers[t] for t in g])
        for a, b in zip(alone.state_dict().values(), together[i].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    first = student(10)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), together[0].state_dict().values()))
    with pytest.raises(ValueError, match="groups must give each of the 3 students a non-empty list of teacher "
                                         "indices in \\[0, 2\\]"):
        rt.fit(together, data, spec, seed=7, objective="kd", teachers=teachers, groups=[[0], [3], []])


def test_schedules():
    step = rt.TrainSpec(lr=0.1, schedule="step")
    assert [rt.lr_at(s, 100, step) for s in (0, 29, 30, 60, 80, 99)] == pytest.approx([0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008])
    one = rt.TrainSpec(lr=1.0, schedule="onecycle", warmup=0.2)
    assert [rt.lr_at(s, 100, one) for s in (0, 10, 20, 60, 100)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])


def test_networks_shapes_and_sizes():
    x = torch.randn(2, 3, 32, 32)
    assert make_model("fast", 10, width=0.25)(x).shape == (2, 10)
    wrn = WideResNet(16, 2, num_classes=100)
    assert wrn(x).shape == (2, 100) and wrn.features(x).shape == (2, 128, 8, 8)
    # WRN-28-10 has 36.5M parameters (Zagoruyko & Komodakis report 36.5M)
    assert count_parameters(WideResNet(28, 10)) == pytest.approx(36.5e6, rel=0.01)
    assert macs_per_image(WideResNet(28, 10)) == pytest.approx(5.25e9, rel=0.02)
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        WideResNet(27, 10)
    with pytest.raises(ValueError, match="model must be one of 'fast', 'wrn'"):
        make_model("resnet", 10)
    assert count_parameters(FastNet(width=1.0)) > 10 * count_parameters(FastNet(width=0.25))


def tiny_data(n=64):
    x, y = random_images(n, 3)
    xt, yt = random_images(32, 4)
    return rt.DeviceData(rd.ImageData(x, y % 4, xt, yt % 4, ["a", "b", "c", "d"], "synthetic"))


def test_resume_equals_uninterrupted(tmp_path):
    data = tiny_data()
    spec = rt.TrainSpec(epochs=3, batch_size=16, lr=0.1, cutout=4)

    def model():
        torch.manual_seed(0)
        return FastNet(4, width=0.125)

    whole = model()
    rt.fit([whole], data, spec, seed=5)
    killed = model()
    ckpt = tmp_path / "job.pt"
    rec = rt.fit([killed], data, spec, seed=5, checkpoint=ckpt, stop_after=1)
    assert rec["epochs_done"] == 1 and ckpt.exists()
    resumed = model()  # a fresh process: the model is rebuilt, then the checkpoint restores it
    rec = rt.fit([resumed], data, spec, seed=5, checkpoint=ckpt)
    assert rec["epochs_done"] == 3 and len(rec["train_loss"]) == 3
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_average_objective_trains_the_mean_of_the_members():
    data = tiny_data()
    members = [FastNet(4, width=0.125) for _ in range(2)]
    before = [p.detach().clone() for p in members[1].parameters()]
    rec = rt.fit(members, data, rt.TrainSpec(epochs=1, batch_size=32), seed=0, objective="average")
    assert rec["epochs_done"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, members[1].parameters()))  # both move
    with pytest.raises(ValueError, match="objective 'ce' trains one model per job"):
        rt.fit(members, data, rt.TrainSpec(epochs=1), seed=0, objective="ce")
    with pytest.raises(ValueError, match="teachers must be given"):
        rt.fit(members[:1], data, rt.TrainSpec(epochs=1), seed=0, objective="kd")

    # One float64 step (the whole set as one batch, no augmentation, momentum or weight decay) is -lr
    # times the autograd gradient of CE(the members' mean logits); it is not the step each member
    # would take trained alone on CE of its own logits (a trainer that silently trains the members
    # independently fails here).
    import copy

    from torch.nn import functional as F

    small = tiny_data(32)
    data64 = copy.copy(small)
    data64.x_train = small.x_train.double()
    torch.manual_seed(1)
    init = [FastNet(4, width=0.125).double() for _ in range(2)]

    def gradient(loss_of):
        models = copy.deepcopy(init)
        z = [m.train()(data64.x_train) for m in models]
        return torch.autograd.grad(loss_of(z), [p for m in models for p in m.parameters()])

    joint = gradient(lambda z: F.cross_entropy(torch.stack(z).mean(dim=0), small.y_train))
    alone = gradient(lambda z: sum(F.cross_entropy(zs, small.y_train) for zs in z))
    lr = 0.1
    stepped = copy.deepcopy(init)
    rt.fit(stepped, data64, rt.TrainSpec(epochs=1, batch_size=32, lr=lr, momentum=0.0, weight_decay=0.0,
                                         schedule="step", crop_pad=0, flip=False), seed=0, objective="average")
    after = [p for m in stepped for p in m.parameters()]
    start = [p for m in init for p in m.parameters()]
    for a, b, g in zip(after, start, joint):
        step = (a - b).detach()
        assert float((step + lr * g).norm()) <= 1e-5 * float((lr * g).norm()) + 1e-12
    per_member = len(start) // 2
    for s in range(2):  # each member's whole gradient differs from its alone one by far more than round-off
        sl = slice(s * per_member, (s + 1) * per_member)
        gj = torch.cat([g.flatten() for g in joint[sl]])
        ga = torch.cat([g.flatten() for g in alone[sl]])
        assert float((gj - ga).norm()) > 0.1 * float(ga.norm())
    # ... and a few steps lower the group's loss, CE of the members' mean logits, recomputed here on
    # the training set (batch-norm in training mode, as the steps saw it)

    def mean_logit_loss(models):
        with torch.no_grad():
            z = torch.stack([m.train()(small.x_train) for m in copy.deepcopy(models)]).mean(dim=0)
        return float(F.cross_entropy(z, small.y_train))

    torch.manual_seed(1)
    pair = [FastNet(4, width=0.125) for _ in range(2)]
    before = mean_logit_loss(pair)
    rt.fit(pair, small, rt.TrainSpec(epochs=6, batch_size=32, lr=0.2, schedule="step", crop_pad=0, flip=False),
           seed=0, objective="average")
    assert mean_logit_loss(pair) < 0.9 * before


SMOKE = ["--preset", "smoke", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, image_tree):
    """A run of the smoke preset on the image tree: its folder (not to be changed: copy it first)."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    assert reproduce_main(SMOKE + ["--data", str(image_tree), "--out", str(out)]) == 0
    return out


def test_smoke_preset_runs_the_whole_experiment(smoke_run, tmp_path, image_tree):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)  # resumed below
    res = json.loads((out / "results.json").read_text())
    assert len(res["individual"]["test_acc"]) == 2
    for key in ("ensemble", "kd", "self_kd", "average", "kd_ensemble"):
        assert 0.0 <= res[key]["test_acc"] <= 1.0
    # calibration beside accuracy: each row's NLL is the test cross-entropy recomputed here from the
    # run's checkpoints (a row of several models: their mean; an ensemble: of its mean logits). The
    # tiny nets stay near ln 4, so the rows differ by about 1e-3 only: hence the tight tolerance
    from torch.nn import functional as F

    from real_data import reproduce as rp

    cfg, _ = rp.read_saved(out, "--resume")
    assert cfg.spec.ensemble == "logits"
    run_ = rp._Run(cfg, image_tree, None, "cpu")

    def logits_of(names):
        models = [m for name in names for m in run_.trained(out / "checkpoints", name)]
        return rt.predict(models, run_.dd.x_test).double()

    def nll(z):
        return float(F.cross_entropy(z, run_.dd.y_test))

    single = logits_of([f"single-{s}" for s in range(cfg.seeds)])
    kd = logits_of([f"kd-{s}" for s in range(cfg.students)])
    self_kd = logits_of([f"self_kd-{s}" for s in range(cfg.students)])
    average = logits_of(["average"]).mean(dim=0)
    want = {"individual": np.mean([nll(z) for z in single]), "ensemble": nll(single.mean(dim=0)),
            "kd": np.mean([nll(z) for z in kd]), "self_kd": np.mean([nll(z) for z in self_kd]),
            "average": nll(average), "kd_ensemble": nll(kd.mean(dim=0))}
    for key, value in want.items():
        assert res[key]["nll"] == pytest.approx(value, rel=1e-6), key
        assert 0.0 <= res[key]["ece"] <= 1.0
    # the ensemble-size curve over the single models ends at the run's own ensemble, starts at their mean
    curve = res["ensemble_size"]
    assert [r["size"] for r in curve] == [1, 2]
    assert curve[0]["acc"] == pytest.approx(res["individual"]["mean"])
    assert curve[-1]["acc"] == pytest.approx(res["ensemble"]["test_acc"])
    assert 0.0 <= res["disagreement"] <= 1.0
    assert res["timing_s"]["total"] > 0
    assert (out / "table.csv").exists() and (out / "checkpoints" / "single-0.pt").exists()
    assert_png_has_content(out / "accuracy.png")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["experiment"]["seeds"] == 2 and cfg["experiment"]["spec"]["epochs"] == 4
    # it learns: the tree's classes differ in one darkened channel (two classes share one), so a
    # working trainer ends well above chance (0.25); a broken one at it
    assert res["individual"]["mean"] >= 0.4 and res["ensemble"]["test_acc"] >= 0.4
    assert res["timing_s"]["distill_per_student_vs_single"] > 0
    assert res["timing_s"]["distill_per_student_vs_single_cpu"] > 0  # CPU time: robust to the machine's load
    assert (out / "checkpoints" / "kd-0.pt").exists() and (out / "checkpoints" / "self_kd-0.pt").exists()
    # --resume on a finished run retrains nothing and gives the same numbers
    assert reproduce_main(["--resume", str(out), "--data", str(image_tree), "--quiet",
                           "--device", "cpu"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["individual"] == res["individual"]
    # ... and its timings still add up: the kept jobs' time is there, beside this process's
    earlier = again["timing_s"]["earlier_processes"]
    assert earlier["jobs"] == len(res["jobs"]) and "untimed" not in earlier
    assert earlier["wall_s"] >= sum(res["timing_s"][k] for k in res["jobs"])


def test_report_md_puts_the_run_on_one_page(smoke_run, image_tree):
    """report.md: the command as typed, the table and what it prints beyond accuracy, and exactly the
    figure written."""
    import re

    from real_data.reproduce import REPRODUCE_FIGURES

    text = (smoke_run / "report.md").read_text()
    assert f"python -m real_data.reproduce {' '.join(SMOKE)} --data {image_tree} --out {smoke_run}" in text
    for heading in ("## The table", "## Time", "## Figures"):
        assert heading in text
    assert "ensemble" in text.split("## The table")[1].split("## ")[0]
    embedded = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    assert {name for _, name in embedded} == {p.name for p in smoke_run.glob("*.png")} == {"accuracy.png"}
    assert all(caption == REPRODUCE_FIGURES[name] for caption, name in embedded)


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if k not in ("timing_s", "wall_s", "cpu_s", "images_per_s", "throughput")}
    return [_without_timings(v) for v in obj] if isinstance(obj, list) else obj


def test_config_re_creates_the_run_and_flags_beside_it_override(smoke_run, tmp_path, capsys):
    """--config RUN_FOLDER: the run's config, data path and device (the same config.json, the same
    results but for timings); a flag beside it overrides its setting and is checked against the
    others; another command's config, or --preset beside it, is one line naming --config."""
    again = tmp_path / "again"
    assert reproduce_main(["--config", str(smoke_run), "--quiet", "--out", str(again)]) == 0
    assert (again / "config.json").read_text() == (smoke_run / "config.json").read_text()
    assert (_without_timings(json.loads((again / "results.json").read_text()))
            == _without_timings(json.loads((smoke_run / "results.json").read_text())))
    (tmp_path / "c.json").write_text('{"cells": 1}')
    for flags, message in [([str(smoke_run), "--students", "3"], "--students must be an integer in [1, 2], got 3"),
                           ([str(smoke_run / "config.json"), "--preset", "cpu"], "give one starting point"),
                           ([str(tmp_path / "c.json")], "not a real_data.reproduce run folder")]:
        with pytest.raises(SystemExit) as exc:
            reproduce_main(["--config", *flags, "--out", str(tmp_path / "never")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "never").exists()


def test_resume_refuses_a_run_of_the_earlier_version_and_keeps_its_files(tmp_path, image_tree, capsys):
    out = tmp_path / "old"
    assert reproduce_main(["--preset", "smoke", "--data", str(image_tree), "--out", str(out), "--quiet",
                           "--device", "cpu", "--epochs", "1"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    del cfg["experiment"]["spec"]["ensemble"]  # what a run of the one-job-per-student version saved
    (out / "config.json").write_text(json.dumps(cfg))
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    with pytest.raises(SystemExit) as exc:
        reproduce_main(["--resume", str(out), "--data", str(image_tree), "--quiet", "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "started by an earlier version" in err[0]
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


@pytest.mark.parametrize(
    "flags, message",
    [(["--seeds", "0"], "seeds must be an integer >= 1, got 0"),
     (["--dataset", "mnist"], "dataset must be one of 'cifar10', 'cifar100'"),
     (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
     (["--students", "5", "--seeds", "2"], "students must be an integer in [1, 2], got 5"),
     (["--data", "/nonexistent/cifar"], "--data: no such file or folder"),
     (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device")],
)
def test_bad_flags_exit_2_with_one_line(flags, message, capsys, tmp_path):
    argv = flags + ([] if "--data" in flags else ["--data", str(tmp_path)]) + ["--out", str(tmp_path / "never")]
    with pytest.raises(SystemExit) as exc:
        reproduce_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "never").exists()


def test_stacked_fast_nets_train_like_separate_ones():
    from real_data.models import StackedFastNet

    data = tiny_data()
    spec = rt.TrainSpec(epochs=2, batch_size=16, lr=0.05)

    def members():
        torch.manual_seed(3)
        return [FastNet(4, width=0.125) for _ in range(3)]

    stacked = StackedFastNet(members())
    x = data.x_test[:5]
    stacked.eval()
    for s, m in enumerate(members()):
        torch.testing.assert_close(stacked(x)[s], m.eval()(x), rtol=1e-5, atol=1e-6)
    rt.fit([stacked], data, spec, seed=7)
    alone = members()
    for m in alone:
        rt.fit([m], data, spec, seed=7)  # the same batches and augmentation as the stack
    for got, want in zip(stacked.unstack(), alone):
        for (name, a), b in zip(got.state_dict().items(), want.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_smoke_run_with_stacked_seeds(smoke_run, tmp_path, image_tree):
    from real_data import reproduce as rp

    out = tmp_path / "stacked"
    assert reproduce_main(SMOKE + ["--data", str(image_tree), "--out", str(out), "--stack"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["individual"]["test_acc"]) == 2 and "singles-stacked" in res["jobs"]
    assert res["throughput"]["models_per_image"] == 2
    assert (out / "checkpoints" / "singles-stacked.pt").exists()
    # Each stacked seed is the model trained alone, up to float round-off. Member 0 shares its init
    # and batch order (base seed) with the unstacked run's single-0; member s > 0 shares its init with
    # single-s but the stack's batch order, so it is trained alone here on that order.
    cfg, _ = rp.read_saved(out, "--resume")
    run_ = rp._Run(cfg, image_tree, None, "cpu")
    stacked = run_.trained(out / "checkpoints", "singles-stacked")
    unstacked = json.loads((smoke_run / "results.json").read_text())
    alone = [rt.load_models(smoke_run / "checkpoints" / "single-0.pt")[0][0]]
    for s in range(1, cfg.seeds):
        model = run_.new(cfg.seed + s)
        rt.fit([model], run_.dd, cfg.spec, cfg.seed)
        alone.append(model.eval())
    for s, (got, want) in enumerate(zip(stacked, alone)):
        for (name, a), b in zip(got.state_dict().items(), want.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=f"member {s}: {name}")
    z_stacked, z_alone = rt.predict(stacked, run_.dd.x_test), rt.predict(alone, run_.dd.x_test)
    torch.testing.assert_close(z_stacked, z_alone, rtol=1e-3, atol=1e-4)
    acc_alone = (z_alone.argmax(-1) == run_.dd.y_test).float().mean(-1).tolist()
    assert res["individual"]["test_acc"] == acc_alone
    assert res["individual"]["test_acc"][0] == unstacked["individual"]["test_acc"][0]


def test_stack_needs_the_fast_net_in_full_mode(capsys, tmp_path, image_tree):
    with pytest.raises(SystemExit):
        reproduce_main(["--preset", "smoke", "--stack", "--mode", "ntk", "--data", str(image_tree)])
    assert "stack must be False unless model='fast' and mode='full'" in capsys.readouterr().err


def test_gpu_check_tiny_runs_every_check_on_cpu_and_writes_one_json(tmp_path, image_tree, capsys):
    from real_data import gpu_check

    out = tmp_path / "check"
    assert gpu_check.main(["--tiny", "--device", "cpu", "--data", str(image_tree), "--out", str(out)]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["errors"] == {} and report["mode"] == "tiny"
    # the torch backend agrees with numba from the same seeds (both on CPU here)
    assert report["theory"]["max_rel_diff_vs_cpu"] < 1e-4
    # GFLOP/s is the documented count, 2 products of 2 n P d S k m flops a step, over the step time
    # it reports; and those steps fit in the time the whole command took
    theory, tiny = report["theory"], gpu_check.TINY["theory"]
    size = theory["size"]
    assert size == {"n": tiny["n"], "P": tiny["P"], "d": tiny["d"], "S": tiny["S"], "k": gpu_check.K, "m": gpu_check.M}
    flops = 2 * 2 * size["n"] * size["P"] * size["d"] * size["S"] * size["k"] * size["m"]
    assert theory["gflops"] == pytest.approx(flops / (theory["step_ms"] / 1e3) / 1e9, rel=1e-9)
    assert 0 < theory["step_ms"] * tiny["steps"] / 1e3 < report["wall_s"]
    assert 0 <= report["fast_net"]["test_acc"] <= 1 and report["fast_net"]["seconds"] > 0
    assert set(report["reproduce"]["rows"]) == {"individual", "ensemble", "kd", "self_kd", "average", "kd_ensemble"}
    assert report["wrn"]["model"] == "WRN-10-1" and report["wrn"]["images_per_s"] > 0
    assert report["wrn"]["fraction_of_bf16_peak"] is None  # no bf16 peak on a CPU
    printed = capsys.readouterr().out
    assert "theory trainer, torch on cpu" in printed and "WRN-10-1 training, batch 8" in printed


def test_gpu_check_bad_flags_exit_2_with_one_line(tmp_path, capsys):
    from real_data import gpu_check

    for flags, message in ((["--only", "theory,gpu"], "only must be one of 'theory', 'fast_net', 'reproduce', 'wrn'"),
                           (["--only", "fast_net", "--data", str(tmp_path / "nope")], "--data: no such file or folder")):
        with pytest.raises(SystemExit) as exc:
            gpu_check.main(flags + ["--out", str(tmp_path / "o")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.json").write_text("{}")
    with pytest.raises(SystemExit):  # gpu_check has no --resume: its message must not offer one
        gpu_check.main(["--only", "theory", "--out", str(taken)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds another run" in err[0] and "--resume" not in err[0]
    assert gpu_check.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12 and gpu_check.bf16_peak("NVIDIA H100 PCIe") == 756e12


def test_reproduce_accuracy_figure_colours_losses_and_keeps_legends_off_the_bars():
    import matplotlib.colors as mcolors

    from real_data.reproduce import accuracy_figure, plural

    rows = [{"row": "single model", "key": "individual", "test_acc": 60.0, "std": 1.0, "gain_over_single": 0.0},
            {"row": "ensemble", "key": "ensemble", "test_acc": 64.0, "std": None, "gain_over_single": 4.0},
            {"row": "KD", "key": "kd", "test_acc": 58.0, "std": None, "gain_over_single": -2.0}]
    results = {"individual": {"test_acc": [0.59, 0.61]}, "kd": {}, "self_kd": {}, "num_classes": 10}
    fig = accuracy_figure(rows, results, f"x; {plural(1, 'student')}, {plural(2, 'seed')}")
    ax, gx = fig.axes
    colours = [mcolors.to_hex(p.get_facecolor()) for p in gx.patches if p.get_height() < 1]
    assert colours[-1] == mcolors.to_hex("tab:red") and colours[1] == mcolors.to_hex("tab:green")
    fig.canvas.draw()
    for axis in (ax, gx):  # each legend sits below its axes, off the bars
        assert axis.get_legend().get_window_extent().y1 <= axis.get_window_extent().y0
    assert fig._suptitle.get_text() == "x; 1 student, 2 seeds"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_reproduce_table_says_the_reference_columns_are_not_this_run():
    from real_data.reproduce import format_table

    row = {"row": "single model", "test_acc": 21.9, "std": None, "gain_over_single": 0.0, "train_acc": 30.0,
           "paper": 96.7, "fast_replication": None}
    text = format_table([row])
    assert "96.70" in text and "not numbers of this run" in text.splitlines()[-1]
    assert "not numbers of this run" not in format_table([{**row, "paper": None}])
