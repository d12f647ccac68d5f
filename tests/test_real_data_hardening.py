"""real_data.reproduce on hostile input: damaged checkpoints on --resume, flags a run would ignore, and
--help that says what a run does."""

import json
import re
from pathlib import Path

import pytest

from real_data import reproduce as rp

README = Path(__file__).resolve().parents[1] / "README.md"


def test_resume_names_a_damaged_checkpoint_keeps_it_and_trains_its_job_again(tmp_path, image_tree, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(image_tree), "--device", "cpu"]
    assert rp.main(["--preset", "smoke", "--out", str(out), "--epochs", "1", "--quiet"] + argv) == 0
    whole = json.loads((out / "results.json").read_text())
    ckpt = out / "checkpoints"
    cut = {}
    for name in ("single-0", "kd-0"):  # a finished job's checkpoint, and a student's (written by the distill job)
        data = (ckpt / f"{name}.pt").read_bytes()
        cut[name] = data[:-10]  # its end lost, as a crash during a write can leave it
        (ckpt / f"{name}.pt").write_bytes(cut[name])
    capsys.readouterr()
    assert rp.main(["--resume", str(out)] + argv) == 0  # not --quiet: the log says what it did
    lines = capsys.readouterr().out.splitlines()
    for name, job in (("single-0", "single-0"), ("kd-0", "distill")):
        named = [line for line in lines if f"{name}.pt" in line]
        assert len(named) == 1 and "damaged" in named[0] and f"training {job} again" in named[0]
        assert (ckpt / f"{name}.pt.damaged").read_bytes() == cut[name]  # nothing written is lost
        assert (out / "jobs" / f"{job}.json.stale").exists()
    again = json.loads((out / "results.json").read_text())
    for key in ("individual", "ensemble", "kd", "self_kd", "average"):  # the uninterrupted run's numbers
        assert again[key] == whole[key], key


@pytest.mark.parametrize(
    "flags, message",
    [(["--preset", "smoke", "--depth", "7"], "--depth does nothing unless --model wrn"),
     (["--dropout", "0.3"], "--dropout does nothing unless --model wrn"),
     (["--schedule", "step", "--warmup", "0.5"], "--warmup does nothing unless --schedule onecycle"),
     (["--preset", "paper", "--warmup", "0.1"], "--warmup does nothing unless --schedule onecycle")],
)
def test_flags_the_run_would_ignore_are_refused(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        rp.main(flags + ["--data", str(tmp_path), "--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("flags", [["--preset", "paper", "--depth", "16"], ["--model", "wrn", "--dropout", "0.3"],
                                   ["--warmup", "0.1"]])
def test_the_same_flags_where_they_act_are_taken(flags, tmp_path, capsys):
    with pytest.raises(SystemExit):  # the empty --data folder stops it before any training
        rp.main(flags + ["--data", str(tmp_path), "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert "does nothing" not in err and "neither the official CIFAR python format" in err


def help_defaults(text: str) -> dict:
    """{flag: (the default shown, {preset: its value shown})} from ``--help`` output."""
    shown = {}
    blocks = re.findall(r"^  (--[\w-]+)(?:, --no-[\w-]+| [A-Z]+)?\s(.*?)(?=^  -|^\S|\Z)", text, re.M | re.S)
    for flag, block in blocks:
        found = re.search(r"\(default: ([^;)]*)(?:; --preset ([^)]*))?\)$", " ".join(block.split()))
        if found:
            others = dict(item.split(" ") for item in found.group(2).split(", ")) if found.group(2) else {}
            shown[flag] = (found.group(1), others)
    return shown


def test_help_shows_the_defaults_a_run_without_flags_uses_and_each_presets(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    shown = help_defaults(rp.build_parser().format_help())
    runs = {name: rp.configure(name) for name in rp.PRESETS}
    fields = [(name, lambda c: c) for name in rp.ReproduceConfig.__dataclass_fields__ if name != "spec"]
    fields += [(name, lambda c: c.spec) for name in rp.TrainSpec.__dataclass_fields__]
    for name, part in fields:
        flag = "--" + name.replace("_", "-")
        default, others = shown[flag]
        assert default == str(getattr(part(rp.configure()), name)), flag  # what a run without --preset uses
        for preset, cfg in runs.items():
            assert others.get(preset, default) == str(getattr(part(cfg), name)), (flag, preset)


def test_help_states_no_run_time_the_readme_does_not():
    text = " ".join(rp.build_parser().format_help().split())
    for minutes in re.findall(r"(\d+) min", text):
        assert f"{minutes} min" in README.read_text(), f"--help says {minutes} min, the README does not"
