"""Run folders: ``config.json``, ``results.json``, CSV tables and figures, each written atomically.

A file is written to a temporary name in the same folder and renamed into place, so a run that is
killed never leaves a half-written result, and an existing file is only replaced by a complete one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from multiview.files import write_atomic  # noqa: F401  (the run folders' one writer)


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


def as_json(obj):
    """``obj`` as it reads back from JSON (numpy values as Python ones, tuples as lists, NaN as None)."""
    return json.loads(json.dumps(_to_jsonable(obj)))


def write_json(path, obj) -> Path:
    return write_atomic(path, (json.dumps(_to_jsonable(obj), indent=2) + "\n").encode())


def write_csv(path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(_to_jsonable(row))
    return write_atomic(path, buf.getvalue().encode())


def save_figure(fig, path_png) -> list[Path]:
    """Save a matplotlib figure as PNG and PDF next to each other, atomically; close it."""
    out = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=130, bbox_inches="tight")
        out.append(write_atomic(Path(path_png).with_suffix("." + ext), buf.getvalue()))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def write_report(folder, title: str, command: str, sections: list[tuple[str, str]], figures: dict[str, str]) -> Path:
    """``folder/report.md``, a run on one page: what was run (``command``, the machine, the date),
    then each section (a heading and the text the command printed, kept as printed), then every
    figure of ``figures`` (file name -> one-line caption) that is in the folder, embedded. Plain
    Markdown: it renders in an editor or a repository browser, no server."""
    import platform

    folder = Path(folder)
    lines = [f"# {title}", "",
             f"- command: `{command}`",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
             f"Python {platform.python_version()}",
             f"- written: {time.strftime('%Y-%m-%d %H:%M %Z')}", ""]
    for heading, text in sections:
        if text and text.strip():
            lines += [f"## {heading}", "", "```", text.rstrip("\n"), "```", ""]
    shown = [(name, caption) for name, caption in figures.items() if (folder / name).is_file()]
    if shown:
        lines += ["## Figures", ""]
        for name, caption in shown:
            lines += [f"![{caption}]({name})", "", f"*{name}*: {caption}", ""]
    return write_atomic(folder / "report.md", "\n".join(lines).encode())


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command as typed: ``prog`` and its arguments (``sys.argv`` when ``argv`` is None), quoted
    for a shell."""
    import shlex
    import sys

    return f"{prog} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()


def load_config_file(where: str | os.PathLike):
    """What ``--config RUN`` names: ``RUN/config.json`` or that file itself, as JSON; a ValueError
    naming --config for a file that is missing, unreadable or not JSON."""
    path = Path(where)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"--config {where}: cannot read {path} ({err.strerror or type(err).__name__})") from None
    except ValueError:
        raise ValueError(f"--config {where}: {path} is not JSON") from None


def read_run_config(where: str | os.PathLike, command: str, sections) -> dict:
    """The settings of an earlier run of ``command`` (``--config RUN``, :func:`load_config_file`); a
    ValueError naming --config for another command's (its sections are not ``sections``)."""
    saved = load_config_file(where)
    if not isinstance(saved, dict) or set(saved) != set(sections):
        raise ValueError(f"--config {where}: not the config of an earlier {command} run (its sections differ from "
                         f"{', '.join(sorted(sections))}); start from a run of this command")
    return saved


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """A fresh folder ``root/name-YYYYmmdd-HHMMSS`` (suffixed -2, -3, ... if it exists)."""
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    path.mkdir(parents=True)
    return path


def out_dir(path: str | os.PathLike | None, name: str) -> Path:
    """The run folder a CLI writes to: ``path`` (created if missing), or a fresh
    ``runs/name-<time>`` when ``path`` is None. A ``path`` that is a file, or empty, is a ValueError."""
    if path is None:
        return new_run_dir("runs", name)
    if not str(path).strip():  # Path("") is the current folder: a run would spill into it
        raise ValueError("--out must name a folder, got an empty string")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot create the folder ({err.strerror or type(err).__name__})") from None
    return out


def _differences(saved, wanted, prefix="") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for key in dict.fromkeys([*saved, *wanted]):
            out += _differences(saved.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == wanted else [f"{prefix[:-1]} ({saved!r} there, {wanted!r} here)"]


def refuse_another_run(out: str | os.PathLike | None, same_flags: bool = True, resumable: bool = True) -> None:
    """ValueError if the folder ``out`` already holds a run (a ``config.json``); ``same_flags``: the
    command's --resume needs the run's flags again (not where --resume reads the saved config);
    ``resumable``: the command has a --resume to suggest."""
    if out is not None and (Path(out) / "config.json").exists():
        if not resumable:
            raise ValueError(f"--out {out} holds another run (its config.json); choose a new folder")
        flags = " and the same flags" if same_flags else ""
        raise ValueError(f"--out {out} holds another run (its config.json); continue it with --resume {out}"
                         f"{flags}, or choose a new folder")


def start_run(out: str | os.PathLike | None, resume: str | os.PathLike | None, name: str, config: dict,
              resumable: bool = True) -> Path:
    """The run folder of a command, and its ``config.json``.

    Without ``resume``: a new folder (``out``, or ``runs/name-<time>``) whose ``config.json`` is
    written here; an ``out`` that already holds a run (a ``config.json``) is refused, so a run
    never writes into another run's folder. With ``resume``: that folder, which must hold a
    ``config.json`` equal to ``config`` (the command must describe the same run); it is kept as
    it is. Errors are ValueErrors naming the flag.
    """
    wanted = as_json(config)
    if resume is not None and out is not None and Path(out).resolve() != Path(resume).resolve():
        raise ValueError(f"--out {out} with --resume {resume}: a resumed run writes into its own folder; "
                         "drop --out (or give the same folder)")
    if resume is not None:
        folder = Path(resume)
        saved_path = folder / "config.json"
        stages = folder / "stages"
        if stages.exists() and not stages.is_dir():
            raise ValueError(f"--resume {folder}: {stages} is a file, not the run's stages folder; move it away")
        if not saved_path.is_file():
            raise ValueError(f"--resume {folder}: not a run folder (no config.json there)")
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"--resume {folder}: its config.json cannot be read ({err})") from None
        if isinstance(saved, dict) and isinstance(wanted, dict) and set(saved) != set(wanted):
            raise ValueError(f"--resume {folder}: not a {name} run (its config.json has the sections "
                             f"{', '.join(sorted(saved)) or 'none'}); resume it with the command that made it")
        diff = _differences(saved, wanted)
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise ValueError(f"--resume {folder}: this command describes another run than the one there: {shown}")
        return folder
    try:
        refuse_another_run(out, resumable=resumable)
    except OSError as err:  # a name longer than the file system allows, a folder we may not read
        raise ValueError(f"--out {out}: cannot use this path ({err.strerror or type(err).__name__})") from None
    folder = out_dir(out, name)
    write_json(folder / "config.json", wanted)
    return folder
