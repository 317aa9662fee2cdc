"""The on-disk cache of heatmaps: atomic, resumable, keyed by what made them.

Layout: ``runs/<profile>/heatmaps/<method>/<key>/<cxr_id>.npz`` where ``key`` hashes the
method name, its options, the model's weights and the code that computes the maps. One file per image holds that image's
float32 ``[C, H, W]`` maps for all explained classes. Each file is written atomically, so a
run killed at any moment leaves only complete files (and possibly a ``*.tmp`` that the
next run replaces); a rerun or a resumed run computes only the images that have no file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .errors import DataError
from .files import atomic_path, atomic_write_text

__all__ = ["model_fingerprint", "HeatmapStore"]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class HeatmapStore:
    """Heatmaps of one method with one set of options for one model.

    Parameters
    ----------
    root : path
        ``runs/<profile>/heatmaps``.
    method : str
        A method's key, with its rule where it has one (``"<key>-<rule>"``).
    options : dict
        Every option that changes the maps (JSON-serialisable).
    model_key : str
        :func:`model_fingerprint` of the explained model.
    code : str, optional
        A version of the code that computes the maps
        (:func:`shamsul_utils.explainers.code_version`): other code, other entries.

    Examples
    --------
    >>> import tempfile
    >>> store = HeatmapStore(tempfile.mkdtemp(), "demo", {"a": 1}, "model0")
    >>> store.save("image1", np.ones((2, 4, 4), np.float32))
    >>> store.missing(["image1", "image2"])
    ['image2']
    >>> store.load("image1").shape
    (2, 4, 4)
    """

    def __init__(self, root: str | Path, method: str, options: dict, model_key: str, *, code: str = ""):
        self.method = method
        self.options = dict(options)
        self.model_key = model_key
        key = {"method": method, "options": self.options, "model": model_key} | ({"code": code} if code else {})
        description = json.dumps(key, sort_keys=True, default=str)
        self.key = hashlib.sha256(description.encode()).hexdigest()[:12]
        self.folder = Path(root) / method / self.key
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "store.json"
        if not info.is_file():
            atomic_write_text(info, json.dumps(json.loads(description), indent=2))

    def superseded_because(self) -> str | None:
        """Why maps of this method, options and model cached by *other* code are not reused: a line
        naming the change, or None when there are none (the first run, or other options or model)."""
        for info in sorted(self.folder.parent.glob("*/store.json")):
            if info.parent == self.folder:
                continue
            try:
                other = json.loads(info.read_text())
            except (OSError, ValueError):
                continue
            if other.get("options") == self.options and other.get("model") == self.model_key:
                return (f"{self.method}: the code that computes these maps changed since the cached ones "
                        f"({info.parent.name}); computing them again")
        return None

    def path(self, cxr_id: str) -> Path:
        return self.folder / f"{cxr_id}.npz"

    def has(self, cxr_id: str) -> bool:
        return self.path(cxr_id).is_file()

    def missing(self, cxr_ids: Sequence[str]) -> list[str]:
        """The ids without a stored heatmap, in the given order."""
        return [cxr_id for cxr_id in cxr_ids if not self.has(cxr_id)]

    def save(self, cxr_id: str, heatmap: np.ndarray) -> None:
        """Store one image's ``[C, H, W]`` maps atomically."""
        with atomic_path(self.path(cxr_id)) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, heatmap=np.asarray(heatmap, dtype=np.float32))

    def load(self, cxr_id: str) -> np.ndarray:
        path = self.path(cxr_id)
        try:
            with np.load(path) as content:
                return content["heatmap"]
        except FileNotFoundError:
            raise DataError(f"{path}: no stored heatmap for {cxr_id!r}; run the explainer notebook first") from None
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as error:
            raise DataError(f"{path}: corrupt heatmap file ({error.__class__.__name__}); delete it to recompute") from None

    def load_many(self, cxr_ids: Sequence[str]) -> np.ndarray:
        """``[N, C, H, W]`` for ``cxr_ids`` (all must be stored)."""
        return np.stack([self.load(cxr_id) for cxr_id in cxr_ids])

    def compute(self, cxr_ids: Sequence[str], images: torch.Tensor,
                explain: Callable[[torch.Tensor], np.ndarray], *, chunk: int = 1,
                progress: bool = True) -> np.ndarray:
        """Explain the images that are not stored yet, ``chunk`` at a time, saving each at once.

        Parameters
        ----------
        cxr_ids : sequence of str
            One id per image.
        images : torch.Tensor
            ``[N, 3, H, W]``, in the order of ``cxr_ids``.
        explain : callable
            Maps a ``[n, 3, H, W]`` batch to ``[n, C, H, W]`` maps.
        chunk : int
            Images per call of ``explain``; what is lost on a kill is at most one chunk.

        Returns
        -------
        numpy.ndarray
            ``[N, C, H, W]`` for all ids, computed or loaded.
        """
        if len(cxr_ids) != len(images):
            raise ValueError(f"{len(cxr_ids)} ids for {len(images)} images")
        todo = [index for index, cxr_id in enumerate(cxr_ids) if not self.has(cxr_id)]
        with tqdm(total=len(cxr_ids), initial=len(cxr_ids) - len(todo), desc=self.method, unit="image",
                  disable=not progress) as bar:
            for start in range(0, len(todo), chunk):
                indices = todo[start:start + chunk]
                maps = explain(images[indices])
                for index, heatmap in zip(indices, maps, strict=True):
                    self.save(cxr_ids[index], heatmap)
                bar.update(len(indices))
        return self.load_many(cxr_ids)
