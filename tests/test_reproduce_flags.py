"""real_data.reproduce flags that no other test runs to completion: each is run on a tiny setting (the
smoke preset cut to a few dozen images and one or two epochs, seconds on CPU) and checked for what it
documents, read back from the run folder (config.json, results.json, checkpoints), so a flag that is
ignored or wired to nothing fails here.

* ``--mode random_features``: the frozen network is bit for bit its (seeded, batch-norm calibrated) init
  in every checkpoint, while the linear read-out moved;
* ``--ensemble softmax``: the ensemble rows are the mean of the members' probabilities, recomputed here
  from the checkpoints (accuracy and NLL; the NLL of the logit mean differs, so the check bites), and the
  KD teachers' target is built the same way;
* ``--average-members``: that many models in the "average" checkpoint, trained as one (objective
  "average"), and the row's accuracy is that of the mean of their logits;
* ``--labels coarse`` (with ``--dataset cifar100``, official format): 20 classes, the coarse names, and
  accuracies against the coarse labels;
* every training flag (a field of :class:`real_data.train.TrainSpec`) with a non-default value reaches
  config.json, the spec each job is trained with (``real_data.train.fit``) and each job's checkpoint.
"""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images
from scipy.special import softmax

from real_data import data as rd
from real_data import reproduce as rp
from real_data import train as rt
from real_data.baselines import RandomFeatureNet
from theory_sims import ensembles as en

# The smoke preset cut down further: one seed, one student of each kind, one averaged model, one epoch
# on 64 of the image tree's 160 training images; tests override what they exercise (a later flag wins).
# One epoch is one step here, which onecycle's warm-up takes at learning rate 0: a test that needs the
# weights to move asks for two epochs.
TINY = ["--preset", "smoke", "--quiet", "--device", "cpu", "--seeds", "1", "--students", "1",
        "--average-members", "1", "--epochs", "1", "--n-train", "64", "--n-test", "32"]


def reproduce(out: Path, data: Path, *flags: str) -> Path:
    assert rp.main(TINY + ["--data", str(data), "--out", str(out), *flags]) == 0
    return out


def saved(out: Path):
    """The run's config (as a ReproduceConfig), its results and the shared data object of its jobs."""
    cfg = rp.ReproduceConfig.from_dict(json.loads((out / "config.json").read_text())["experiment"])
    data_path = json.loads((out / "config.json").read_text())["data"]
    return cfg, json.loads((out / "results.json").read_text()), rp._Run(cfg, data_path, None, "cpu")


def checkpoint(out: Path, name: str) -> dict:
    return torch.load(out / "checkpoints" / f"{name}.pt", map_location="cpu", weights_only=False)


def logits(out: Path, names, x) -> np.ndarray:
    """Logits (S, N, k) on ``x`` of the models in the named checkpoints, loaded as visualize loads them."""
    models = [m for n in names for m in rt.load_models(out / "checkpoints" / f"{n}.pt")[0]]
    return rt.predict(models, x).numpy()


def accuracy(z: np.ndarray, y) -> float:
    return float((z.argmax(-1) == np.asarray(y)).mean())


# ------------------------------------------------------------------------------------ --mode random_features


def test_random_features_keeps_the_network_at_its_init_and_trains_the_read_out(tmp_path, image_tree):
    out = reproduce(tmp_path / "rf", image_tree, "--mode", "random_features", "--epochs", "2")
    cfg, res, run = saved(out)
    assert cfg.mode == "random_features"
    assert isinstance(rt.load_models(out / "checkpoints" / "single-0.pt")[0][0], RandomFeatureNet)
    specs = rp._model_specs(cfg)
    for name in ("single-0", "kd-0", "self_kd-0", "average"):  # every objective: ce, kd, average
        state = checkpoint(out, name)
        assert state["meta"]["mode"] == "random_features" and state["record"]["epochs_done"] == 2
        for seed, trained in zip(specs[name]["members"], state["models"], strict=True):
            init = run.new(seed).state_dict()  # the seeded network, batch norm calibrated as in the run
            assert set(trained) == set(init), name
            frozen = [k for k in init if k.startswith("net.")]
            assert any(k.endswith("weight") and init[k].dim() == 4 for k in frozen), f"{name}: no conv in net.*"
            moved = [k for k in frozen if not torch.equal(trained[k], init[k])]
            assert not moved, f"{name}: the random features changed in training: {moved[:5]}"
            for k in ("fc.weight", "fc.bias"):  # ... and the read-out learned
                assert (trained[k] - init[k]).abs().max() > 1e-4, f"{name}: {k} did not move"
    assert 0.0 <= res["individual"]["mean"] <= 1.0


# ------------------------------------------------------------------------------------------ --ensemble softmax


def test_ensemble_softmax_averages_the_members_probabilities(tmp_path, image_tree, monkeypatch):
    targets = []
    real_target = rt.distill_target

    def spy(z, temperature, ensemble="logits"):  # the KD teachers' target, as fit builds it
        targets.append(ensemble)
        return real_target(z, temperature, ensemble)

    monkeypatch.setattr(rt, "distill_target", spy)
    # random features: a read-out on standardised fixed features has spread-out logits, where the tiny
    # fast net's (scaled by 1/9) stay so near uniform that both ensembles' NLLs agree to 1e-8; all 80 test
    # images, on which the two ensembles' accuracies differ too
    out = reproduce(tmp_path / "soft", image_tree, "--ensemble", "softmax", "--seeds", "2", "--students", "2",
                    "--mode", "random_features", "--n-test", "0")
    cfg, res, run = saved(out)
    assert cfg.spec.ensemble == "softmax"
    assert targets and set(targets) == {"softmax"}  # every KD step's teacher target
    assert checkpoint(out, "distill")["spec"]["ensemble"] == "softmax"
    y = run.dd.y_test.numpy()
    single = logits(out, ["single-0", "single-1"], run.dd.x_test)
    kd = logits(out, ["kd-0", "kd-1"], run.dd.x_test)
    # the logits here are the run's: its per-model accuracies come out the same
    assert res["individual"]["test_acc"] == pytest.approx([accuracy(z, y) for z in single])
    assert res["kd"]["per_model"] == pytest.approx([accuracy(z, y) for z in kd])
    acc_differs = []
    for key, z in (("ensemble", single), ("kd_ensemble", kd)):
        p = softmax(z.astype(np.float64), axis=-1).mean(0)  # the mean of the members' probabilities
        assert res[key]["test_acc"] == pytest.approx(accuracy(p, y)), key
        acc_differs.append(accuracy(p, y) != accuracy(z.mean(0), y))
        want = float(np.mean(-np.log(p[np.arange(len(y)), y])))
        of_logit_mean = en.nll(z.mean(0), y)
        assert abs(want - of_logit_mean) > 1e-4, f"{key}: both definitions agree here, the check cannot bite"
        assert res[key]["nll"] == pytest.approx(want, rel=1e-5), key
    assert any(acc_differs), "the logit mean has the same accuracies here: the accuracy checks cannot bite"
    assert res["ensemble_size"][-1]["acc"] == pytest.approx(res["ensemble"]["test_acc"])


# -------------------------------------------------------------------------------------------- --average-members


def test_average_members_trains_that_many_models_as_one(tmp_path, image_tree):
    out = reproduce(tmp_path / "avg", image_tree, "--average-members", "3")
    cfg, res, run = saved(out)
    assert cfg.average_members == 3 and res["average"]["members"] == 3
    state = checkpoint(out, "average")
    assert state["objective"] == "average" and len(state["models"]) == 3  # one job, three models
    first, second = state["models"][:2]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # different seeds, not copies
    z_test = logits(out, ["average"], run.dd.x_test)
    z_train = logits(out, ["average"], run.dd.x_train)
    assert z_test.shape[0] == 3
    # the row is the model the job trained: the mean of its members' logits
    assert res["average"]["test_acc"] == pytest.approx(accuracy(z_test.mean(0), run.dd.y_test.numpy()))
    assert res["average"]["train_acc"] == pytest.approx([accuracy(z_train.mean(0), run.dd.y_train.numpy())])


# ------------------------------------------------------------------------------------------- --labels coarse


COARSE_NAMES = [f"coarse{i}" for i in range(20)]


def write_official_cifar100(root: Path, n_train: int = 20, n_test: int = 10, classes: int = 4):
    """``root/cifar-100-python`` in the official format: coarse class c < ``classes`` has channel c % 3
    darkened (as in conftest's tree); its fine labels are 20 and up, none a coarse label's value."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    labels = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, coarse, fine = [], [], []
        for c in range(classes):
            x, _ = random_images(n, 10 * c + (split == "test"))
            x[:, :, :, c % 3] //= 4
            xs.append(x)
            coarse += [c] * n
            fine += [20 + 5 * c + i % 5 for i in range(n)]
        x = np.concatenate(xs)
        (folder / split).write_bytes(pickle.dumps({"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),
                                                   "fine_labels": fine, "coarse_labels": coarse}))
        labels[split] = np.asarray(coarse)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"fine{i}" for i in range(100)],
                                                "coarse_label_names": COARSE_NAMES}))
    return folder, labels


def test_labels_coarse_trains_on_the_20_coarse_classes(tmp_path, monkeypatch):
    folder, labels = write_official_cifar100(tmp_path / "c100")
    monkeypatch.setattr(rd, "_check_md5", lambda *a, **k: None)  # a made-up folder has no published md5
    out = reproduce(tmp_path / "coarse", folder, "--dataset", "cifar100", "--labels", "coarse",
                    "--n-train", "0", "--n-test", "0", "--epochs", "2")
    cfg, res, _ = saved(out)
    assert (cfg.dataset, cfg.labels) == ("cifar100", "coarse")
    assert res["num_classes"] == 20
    meta = checkpoint(out, "single-0")["meta"]
    assert meta["num_classes"] == 20 and meta["classes"] == COARSE_NAMES
    x_test = rt.normalise(rd.load(folder, "cifar100", "coarse", verify=False).x_test, meta["mean"], meta["std"])
    z = logits(out, ["single-0"], x_test)
    assert z.shape == (1, len(labels["test"]), 20)
    # scored against the coarse labels (every fine label here is >= 20, which a 20-way head never predicts,
    # so scored against them the accuracy would be 0)
    assert res["individual"]["test_acc"] == pytest.approx([accuracy(z[0], labels["test"])])
    assert res["individual"]["test_acc"][0] > 0
    assert res["individual"]["train_acc"] == pytest.approx(
        [accuracy(logits(out, ["single-0"], rt.normalise(rd.load(folder, "cifar100", "coarse", verify=False).x_train,
                                                         meta["mean"], meta["std"]))[0], labels["train"])])


# ----------------------------------------------------------------------------------------------- training flags


# Every TrainSpec field with a value the smoke preset does not use, as typed, and the value expected.
# --warmup acts only with --schedule onecycle (refused otherwise), so it runs apart from --schedule step.
TRAIN_FLAGS = {
    "epochs": (["--epochs", "2"], 2),
    "batch_size": (["--batch-size", "32"], 32),
    "lr": (["--lr", "0.05"], 0.05),
    "momentum": (["--momentum", "0.5"], 0.5),
    "weight_decay": (["--weight-decay", "0.001"], 0.001),
    "schedule": (["--schedule", "step"], "step"),
    "warmup": (["--warmup", "0.3"], 0.3),
    "label_smoothing": (["--label-smoothing", "0.1"], 0.1),
    "crop_pad": (["--crop-pad", "2"], 2),
    "flip": (["--no-flip"], False),
    "cutout": (["--cutout", "8"], 8),
    "kd_temperature": (["--kd-temperature", "2.5"], 2.5),
    "kd_alpha": (["--kd-alpha", "0.3"], 0.3),
    "ensemble": (["--ensemble", "softmax"], "softmax"),
    "bf16": (["--no-bf16"], False),
    "channels_last": (["--no-channels-last"], False),
    "compile": (["--compile"], True),
}
RUN_OF = {name: ("warmup" if name == "warmup" else "rest") for name in TRAIN_FLAGS}


def test_the_flag_table_covers_every_training_flag():
    assert set(TRAIN_FLAGS) == set(rp.build_parser().get_default("_spec")) == set(rt.TrainSpec.__dataclass_fields__)
    smoke = rp.configure("smoke").spec
    assert all(getattr(smoke, name) != value for name, (_, value) in TRAIN_FLAGS.items())  # all non-default


@pytest.fixture(scope="module")
def flag_runs(tmp_path_factory, image_tree):
    """Two tiny runs that between them pass every flag of TRAIN_FLAGS: for each, the run folder, the
    (job, spec) of every call of real_data.train.fit and the models handed to torch.compile (stubbed
    here: compiling on CPU takes minutes and a C compiler)."""
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        real_fit = rt.fit
        for which in ("rest", "warmup"):
            calls, compiled = [], []

            def fit(models, data, spec, *args, _calls=calls, **kwargs):
                _calls.append((kwargs.get("desc"), spec, len(models)))
                return real_fit(models, data, spec, *args, **kwargs)

            mp.setattr(rt, "fit", fit)
            mp.setattr(torch, "compile", lambda m, *a, _seen=compiled, **k: _seen.append(m) or m)
            flags = [f for name, (typed, _) in TRAIN_FLAGS.items() if RUN_OF[name] == which for f in typed]
            out = reproduce(tmp_path_factory.mktemp("flags") / which, image_tree, *flags)
            runs[which] = (out, calls, compiled)
    return runs


@pytest.mark.parametrize("name", list(TRAIN_FLAGS))
def test_a_training_flag_reaches_config_json_every_job_and_its_checkpoint(name, flag_runs):
    out, calls, compiled = flag_runs[RUN_OF[name]]
    want = TRAIN_FLAGS[name][1]
    assert json.loads((out / "config.json").read_text())["experiment"]["spec"][name] == want
    jobs = [job for job, _, _ in calls]
    assert {"single-0", "distill", "average"} <= set(jobs), jobs
    for job, spec, _ in calls:  # what each job really trained with
        assert getattr(spec, name) == want, (job, getattr(spec, name))
        assert checkpoint(out, job)["spec"][name] == want, job
    if name == "compile":  # and it acts: every trained model went through torch.compile
        assert len(compiled) == sum(n for _, _, n in calls)


def test_labels_coarse_on_an_image_folder_tree_is_refused_in_one_line(tmp_path, image_tree, capsys):
    """A tree's labels are its class folders: --labels coarse there used to train on the folders and
    write "coarse" into config.json. Now it is refused, naming the data, and nothing is written."""
    with pytest.raises(SystemExit) as exc:
        rp.main(["--data", str(image_tree), "--dataset", "cifar100", "--labels", "coarse", "--preset", "smoke",
                 "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert "an image-folder tree has one label set" in err and str(image_tree) in err
    assert "--labels coarse" in err and not (tmp_path / "never").exists()
