"""The on-disk cache of heatmaps: atomic, resumable, keyed by what made them.

Layout: ``runs/<profile>/heatmaps/<method>/<key>/<cxr_id>.npz`` where ``key`` hashes the
method name, its options, the model's weights and the code that computes the maps. One file per image holds that image's
float32 ``[C, H, W]`` maps for all explained classes and the digest of the model input they
explain (:func:`input_digest`), so that maps of an image whose file was replaced since are
recomputed (with a line saying so), never reused. Each file is written atomically, so a
run killed at any moment leaves only complete files (and possibly a ``*.tmp`` that the
next run replaces); a rerun or a resumed run computes only the images that have no file or
whose input changed.
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
from .notices import notice

__all__ = ["model_fingerprint", "input_digest", "read_heatmap_file", "HeatmapStore", "MAX_STORED_VALUES"]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def input_digest(image: torch.Tensor | np.ndarray) -> str:
    """A short hash of one model input (dtype, shape and values): what a cached map explains.

    Examples
    --------
    >>> input_digest(torch.zeros(3, 2, 2)) == input_digest(np.zeros((3, 2, 2), np.float32))
    True
    >>> input_digest(torch.zeros(3, 2, 2)) == input_digest(torch.ones(3, 2, 2))
    False
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


# The most float32 values one cached file may declare (256 MB): 14 maps of 2048 x 2048 fit. Checked
# in the file's header before its array is allocated, so a crafted header cannot ask for gigabytes.
MAX_STORED_VALUES = 1 << 26


def read_heatmap_file(path: str | Path) -> tuple[np.ndarray, str]:
    """The ``[C, H, W]`` maps of one cached ``.npz`` and the input digest stored with them (``""``
    for files that predate digests).

    Raises
    ------
    FileNotFoundError
        No such file.
    DataError
        Not such a file (not a zip, no ``heatmap`` array, not 3-D float32), or its header declares
        more than :data:`MAX_STORED_VALUES` values: one line naming the file, before allocating.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            with archive.open("heatmap.npy") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(handle)
        if len(shape) != 3 or dtype != np.float32 or int(np.prod(shape, dtype=np.int64)) > MAX_STORED_VALUES:
            raise DataError(f"{path}: declares maps of shape {shape} and dtype {dtype}; expected float32 (C, h, w) "
                            f"with at most {MAX_STORED_VALUES} values")
        with np.load(path) as content:
            digest = str(content["input"]) if "input" in content.files else ""
            return content["heatmap"], digest
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: corrupt heatmap file ({error.__class__.__name__}); delete it to recompute") from None


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
    >>> image = torch.zeros(3, 4, 4)
    >>> store.save("image1", np.ones((2, 4, 4), np.float32), digest=input_digest(image))
    >>> store.missing(["image1", "image2"], [input_digest(image), input_digest(image)])
    ['image2']
    >>> store.missing(["image1"], [input_digest(image + 1)])  # another image under the same id
    ['image1']
    >>> store.load("image1", input_digest(image)).shape
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

    def superseded_because(self, cxr_ids=None) -> str | None:
        """Why maps of this method, options and model cached by *other* code are not reused: a line
        naming the change, or None when there are none (the first run, or other options or model).
        With ``cxr_ids`` (the images about to be computed), only when other code had cached one of
        them: new images are not a recomputation."""
        for info in sorted(self.folder.parent.glob("*/store.json")):
            if info.parent == self.folder:
                continue
            try:
                other = json.loads(info.read_text())
            except (OSError, ValueError):
                continue
            if cxr_ids is not None and not any((info.parent / f"{cxr_id}.npz").is_file() for cxr_id in cxr_ids):
                continue
            if other.get("options") == self.options and other.get("model") == self.model_key:
                return (f"{self.method}: the code that computes these maps changed since the cached ones "
                        f"({info.parent.name}); computing them again")
        return None

    def path(self, cxr_id: str) -> Path:
        return self.folder / f"{cxr_id}.npz"

    def stored_digest(self, cxr_id: str) -> str | None:
        """The input digest stored with an image's maps: None when there is no file, ``""`` when the
        file predates digests or cannot be read (either way its maps are not trusted)."""
        path = self.path(cxr_id)
        if not path.is_file():
            return None
        try:
            with np.load(path) as content:
                return str(content["input"]) if "input" in content.files else ""
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError):
            return ""

    def has(self, cxr_id: str, digest: str | None = None) -> bool:
        """Whether maps of ``cxr_id`` are stored (and, with ``digest``, made for that very input)."""
        if digest is None:
            return self.path(cxr_id).is_file()
        return self.stored_digest(cxr_id) == digest

    def missing(self, cxr_ids: Sequence[str], digests: Sequence[str] | None = None) -> list[str]:
        """The ids without a stored heatmap (or, with ``digests``, one made for another input), in order."""
        digests = [None] * len(cxr_ids) if digests is None else list(digests)
        if len(digests) != len(cxr_ids):
            raise ValueError(f"{len(digests)} digests for {len(cxr_ids)} ids")
        return [cxr_id for cxr_id, digest in zip(cxr_ids, digests, strict=True) if not self.has(cxr_id, digest)]

    def changed(self, cxr_ids: Sequence[str], digests: Sequence[str]) -> list[str]:
        """The ids whose stored maps were made for another input (the image file was replaced, or
        the maps predate input digests): they are computed again."""
        return [cxr_id for cxr_id, digest in zip(cxr_ids, digests, strict=True)
                if self.stored_digest(cxr_id) not in (None, digest)]

    def save(self, cxr_id: str, heatmap: np.ndarray, *, digest: str) -> None:
        """Store one image's ``[C, H, W]`` maps atomically, with the :func:`input_digest` of the
        input they explain."""
        with atomic_path(self.path(cxr_id)) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, heatmap=np.asarray(heatmap, dtype=np.float32), input=np.array(digest))

    def load(self, cxr_id: str, digest: str | None = None) -> np.ndarray:
        """One image's maps; with ``digest``, refused in one line when they explain another input."""
        path = self.path(cxr_id)
        try:
            heatmap, stored = read_heatmap_file(path)
        except FileNotFoundError:
            raise DataError(f"{path}: no stored heatmap for {cxr_id!r}; run the explainer notebook first") from None
        if digest is not None and stored != digest:
            raise DataError(f"{path}: the maps of {cxr_id!r} were computed for another version of that image; "
                            f"run the explainer notebook again to recompute them")
        return heatmap

    def load_many(self, cxr_ids: Sequence[str], digests: Sequence[str] | None = None) -> np.ndarray:
        """``[N, C, H, W]`` for ``cxr_ids`` (all must be stored; with ``digests``, for those inputs)."""
        digests = [None] * len(cxr_ids) if digests is None else list(digests)
        return np.stack([self.load(cxr_id, digest) for cxr_id, digest in zip(cxr_ids, digests, strict=True)])

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

        Notes
        -----
        An image whose stored maps explain another input (the same id, other pixels) is computed
        again, and a line on standard output says how many and names one.
        """
        if len(cxr_ids) != len(images):
            raise ValueError(f"{len(cxr_ids)} ids for {len(images)} images")
        digests = [input_digest(image) for image in images]
        stored = [self.stored_digest(cxr_id) for cxr_id in cxr_ids]
        todo = [index for index, digest in enumerate(digests) if stored[index] != digest]
        changed = [cxr_ids[index] for index in todo if stored[index] is not None]
        if changed:
            notice(f"{self.method}: {len(changed)} image(s) differ from the ones their cached maps explain "
                   f"(e.g. {changed[0]}); computing their maps again")
        with tqdm(total=len(cxr_ids), initial=len(cxr_ids) - len(todo), desc=self.method, unit="image",
                  disable=not progress) as bar:
            for start in range(0, len(todo), chunk):
                indices = todo[start:start + chunk]
                maps = explain(images[indices])
                for index, heatmap in zip(indices, maps, strict=True):
                    self.save(cxr_ids[index], heatmap, digest=digests[index])
                bar.update(len(indices))
        return self.load_many(cxr_ids, digests)
