"""Reading back a dataset saved with ``MultiViewData.save`` or ``GaussianData.save``.

It lives apart from :mod:`multiview.dataset` because it needs the configs of both generators,
which themselves build on the dataset objects: data flows dataset -> generators -> loading.
"""

from __future__ import annotations

import json
import os

import numpy as np

from multiview.dataset import GaussianData, MultiViewData
from multiview.gaussian import GaussianConfig
from multiview.multiview import MultiViewConfig


def load(path: str | os.PathLike) -> MultiViewData | GaussianData:
    """Load a dataset written by ``save``; the result equals what was saved, array for array."""
    kinds = {"MultiViewData": (MultiViewData, MultiViewConfig), "GaussianData": (GaussianData, GaussianConfig)}
    with np.load(path, allow_pickle=False) as f:
        kind = str(f["_kind"])
        if kind not in kinds:
            raise ValueError(f"{path}: unknown dataset kind {kind!r}")
        data_cls, config_cls = kinds[kind]
        config = config_cls(**json.loads(str(f["_config"])))
        arrays = {name: f[name] for name in f.files if not name.startswith("_")}
    return data_cls(config=config, **arrays)
