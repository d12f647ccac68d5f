"""CIFAR-10/100 from the official "python version" archives or from image-folder trees.

Accepted inputs (``load(path, ...)`` tells them apart):

* the official archives ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or their extracted
  folders (``cifar-10-batches-py/``, ``cifar-100-python/``): pickled batches, checked against the
  published md5 sums (the archive's, or each batch file's for a folder) unless ``verify=False``;
  CIFAR-100 gives its 100 fine labels by default, the 20 coarse ones with ``labels="coarse"``;
* image-folder trees ``train/<class>/*.jpg|png`` and ``test/<class>/...`` (class ids are the
  sorted folder names), as a folder or a ``.tar.gz`` of one (optionally under one top folder),
  as ``../shared/data/cifar10-jpg.tar.gz`` is laid out.

Decoded images are uint8 arrays (N, 32, 32, 3) with int64 labels. With a ``cache_dir`` they are
stored there as ``.npz`` (written to a temporary file, then renamed, so a killed run never leaves
a half-written cache; a cache that does not load is rebuilt). The cache key is the source's
absolute path, size and modification time and the options. Missing, truncated or corrupt inputs
raise ``DataError`` naming the file (and the archive member).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ENV_VAR = "CIFAR_DATA"  # default data path of the command lines


class DataError(ValueError):
    """An input that cannot be read; the message names the file."""


@dataclass(frozen=True)
class _Official:
    archive: str
    archive_md5: str
    folder: str
    train: tuple
    test: tuple
    meta: tuple


OFFICIAL = {
    "cifar10": _Official(
        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
        train=(("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
               ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
               ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    ),
    "cifar100": _Official(
        "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
        train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
    ),
}


@dataclass
class ImageData:
    """Train and test images (uint8, N x 32 x 32 x 3), labels (int64) and class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ImageData":
        """A random subset of each split (the first n of a seeded permutation, kept in the original order)."""
        rng = np.random.default_rng(seed)

        def pick(x, y, n):
            if n is None or n >= len(y):
                return x, y
            idx = np.sort(rng.permutation(len(y))[:n])
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train)
        xte, yte = pick(self.x_test, self.y_test, n_test)
        return ImageData(xtr, ytr, xte, yte, self.classes, self.source)


def load(path, dataset: str = "cifar10", labels: str = "fine", cache_dir=None, verify: bool = True) -> ImageData:
    """Read CIFAR images from ``path`` (see the module docstring for what it may be)."""
    if dataset not in OFFICIAL:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, OFFICIAL))}, got {dataset!r}")
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    cache = None
    if cache_dir is not None:
        _check_cache_dir(Path(cache_dir))
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dataset}|{labels}|{verify}".encode())
        cache = Path(cache_dir) / f"{path.name.split('.')[0]}-{key.hexdigest()[:16]}.npz"
        data = _read_cache(cache)
        if data is not None:
            return _checked(data, dataset, labels, path)
    data = _checked(_load_uncached(path, dataset, labels, verify), dataset, labels, path)
    if cache is not None:
        _write_cache(cache, data)
    return data


# The class counts of the official datasets: a tree with one of them must be the dataset named.
CLASS_COUNTS = {("cifar10", "fine"): 10, ("cifar100", "fine"): 100, ("cifar100", "coarse"): 20}


def _checked(data: "ImageData", dataset: str, labels: str, path) -> "ImageData":
    """Refuse data that is another CIFAR than the one named. An image-folder tree of any other
    number of classes (a subset, a test fixture) is read as it is."""
    want = CLASS_COUNTS.get((dataset, labels))
    if labels == "coarse" and dataset != "cifar100":
        raise DataError(f"{path}: coarse labels exist only for cifar100, not {dataset}")
    got = data.num_classes
    if want is not None and got != want and got in CLASS_COUNTS.values():
        shown = ", ".join(data.classes[:4]) + (", ..." if got > 4 else "")
        raise DataError(f"{path} holds {got} classes ({shown}), but {dataset} with {labels} labels has {want}: "
                        f"name the dataset it is (--dataset, --labels) or the data of the dataset named")
    return data


def _check_cache_dir(cache_dir: Path) -> None:
    if cache_dir.exists() and not cache_dir.is_dir():
        raise DataError(f"cache_dir must be a folder, got the file {cache_dir}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cache_dir must be a folder that can be created, got {cache_dir} "
                        f"({err.strerror or type(err).__name__})") from None
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise DataError(f"cache_dir must be a folder this user can write to, got {cache_dir}")


def _load_uncached(path: Path, dataset: str, labels: str, verify: bool) -> ImageData:
    if path.is_dir():
        tree = _FolderTree(path)
    else:
        tree = _TarTree(path)
    official = OFFICIAL[dataset]
    root = tree.find_official(official)
    for other, theirs in OFFICIAL.items():
        if root is None and other != dataset and tree.find_official(theirs) is not None:
            raise DataError(f"{path} holds {other} ({theirs.folder}), not {dataset}: pass --dataset {other}")
    if root is not None:
        if verify and tree.is_archive:
            _check_md5(path, _md5_file(path), official.archive_md5, "the published archive md5")
        return _read_official(tree, root, official, dataset, labels, verify, path)
    if labels != "fine":  # a tree's labels are its folders: there is no other set to read
        raise DataError(f"{path}: an image-folder tree has one label set, its class folders; --labels coarse needs "
                        f"{dataset} in its official python format")
    return _read_image_folder(tree, path)


# ------------------------------------------------------------------------------------- file trees


class _Tree:
    """File names (``names``, relative, '/'-separated) and their bytes, from a folder or an archive."""

    names: list[str]

    def find_official(self, official: _Official) -> str | None:
        """The prefix under which the official batches lie ('' or their folder), None if absent."""
        present = set(self.names)
        for prefix in ("", official.folder + "/"):
            if prefix + official.test[0][0] in present and prefix + official.meta[0] in present:
                return prefix
        return None


class _FolderTree(_Tree):
    is_archive = False

    def __init__(self, root: Path):
        self.root = root
        self.names = sorted(str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except OSError as err:
            raise DataError(f"{self.root / name}: cannot read ({err})") from None

    def where(self, name: str) -> str:
        return str(self.root / name)


class _TarTree(_Tree):
    is_archive = True

    def __init__(self, path: Path):
        self.path = path
        self.members = {}
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.isfile():
                        self.members[member.name.removeprefix("./")] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            why = "an empty file" if path.stat().st_size == 0 else f"{type(err).__name__}: {str(err).splitlines()[0]}"
            raise DataError(f"{path}: truncated or corrupt archive, not a readable .tar or .tar.gz ({why})") from None
        self.names = sorted(self.members)

    def read(self, name: str) -> bytes:
        return self.members[name]

    def where(self, name: str) -> str:
        return f"{self.path}::{name}"


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_md5(where, got: str, want: str, what: str) -> None:
    if got != want:
        raise DataError(f"{where}: md5 {got} does not match {what} {want}; the file is corrupt or not the "
                        f"official one (real_data.data.load(..., verify=False) reads it anyway)")


# --------------------------------------------------------------------------------- official format


def _read_official(tree, root: str, official: _Official, dataset: str, labels: str, verify: bool, path) -> ImageData:
    def unpickle(name: str, md5: str) -> dict:
        full = root + name
        if full not in tree.names:
            raise DataError(f"{tree.where(full)}: missing from {path}")
        raw = tree.read(full)
        if verify and not tree.is_archive:
            _check_md5(tree.where(full), hashlib.md5(raw).hexdigest(), md5, "the published md5")
        try:
            return pickle.loads(raw, encoding="latin1")
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise DataError(f"{tree.where(full)}: not a CIFAR batch ({type(err).__name__}: {err})") from None

    label_key = "labels" if dataset == "cifar10" else f"{labels}_labels"
    names_key = "label_names" if dataset == "cifar10" else f"{labels}_label_names"

    def split(files):
        xs, ys = [], []
        for name, md5 in files:
            batch = unpickle(name, md5)
            try:
                x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                y = np.asarray(batch[label_key], dtype=np.int64)
            except (KeyError, ValueError) as err:
                raise DataError(f"{tree.where(root + name)}: not a {dataset} batch ({err})") from None
            if len(x) != len(y):
                raise DataError(f"{tree.where(root + name)}: {len(x)} images but {len(y)} labels")
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    x_train, y_train = split(official.train)
    x_test, y_test = split(official.test)
    classes = list(unpickle(*official.meta)[names_key])
    return ImageData(x_train, y_train, x_test, y_test, classes, f"{path} ({dataset}, official)")


# ------------------------------------------------------------------------------------ image folders


def _read_image_folder(tree, path) -> ImageData:
    images = [n for n in tree.names if n.lower().endswith(IMAGE_SUFFIXES)]
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for name in images:
        parts = name.split("/")
        for i, part in enumerate(parts[:-2]):
            if part in splits and i + 2 == len(parts) - 1:
                splits[part].setdefault(parts[i + 1], []).append(name)
                break
    if not splits["train"] or not splits["test"]:
        raise DataError(f"{path}: neither the official CIFAR python format nor an image folder tree with "
                        f"train/<class>/ and test/<class>/ images")
    classes = sorted(splits["train"])
    if sorted(splits["test"]) != classes:
        raise DataError(f"{path}: test classes {sorted(splits['test'])} differ from train classes {classes}")

    def decode(name: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(tree.read(name))) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{tree.where(name)}: cannot decode the image ({err})") from None
        if arr.shape != (32, 32, 3):
            raise DataError(f"{tree.where(name)}: image is {arr.shape[1]}x{arr.shape[0]}, expected 32x32")
        return arr

    def split(which):
        names, labels = [], []
        for label, cls in enumerate(classes):
            files = sorted(splits[which][cls])
            names += files
            labels += [label] * len(files)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            x = np.stack(list(pool.map(decode, names, chunksize=256)))
        return x, np.asarray(labels, dtype=np.int64)

    x_train, y_train = split("train")
    x_test, y_test = split("test")
    return ImageData(x_train, y_train, x_test, y_test, classes, f"{path} (image folder)")


# -------------------------------------------------------------------------------------------- cache


def _read_cache(cache: Path) -> ImageData | None:
    if not cache.exists():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            return ImageData(z["x_train"], z["y_train"], z["x_test"], z["y_test"], [str(c) for c in z["classes"]],
                             str(z["source"]))
    except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never used
        return None


def _write_cache(cache: Path, data: ImageData) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                     classes=np.asarray(data.classes), source=np.asarray(data.source))
        os.replace(tmp, cache)
    finally:
        if tmp.exists():
            tmp.unlink()
