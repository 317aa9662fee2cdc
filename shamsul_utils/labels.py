"""The 14 CheXpert observations and the 10 that CheXlocalize localises.

Class order is CheXpert's (Irvin et al. 2019) and is the order of every label vector,
probability vector and heatmap axis in this project.

References
----------
Irvin, J. et al. (2019). CheXpert: a large chest radiograph dataset with uncertainty labels
and expert comparison. AAAI.
Saporta, A. et al. (2022). Benchmarking saliency methods for chest X-ray interpretation.
Nature Machine Intelligence (CheXlocalize).
"""

from __future__ import annotations

__all__ = [
    "CLASSES",
    "LOCALIZED_CLASSES",
    "CHEXLOCALIZE_TASK_NAMES",
    "class_index",
    "to_chexlocalize_task",
    "from_chexlocalize_task",
]

CLASSES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The ten classes with expert segmentations in CheXlocalize, named as in CheXpert.
LOCALIZED_CLASSES: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Support Devices",
)

# CheXlocalize spells one task differently from CheXpert.
CHEXLOCALIZE_TASK_NAMES: dict[str, str] = {name: name for name in LOCALIZED_CLASSES}
CHEXLOCALIZE_TASK_NAMES["Lung Opacity"] = "Airspace Opacity"

_FROM_TASK = {task: name for name, task in CHEXLOCALIZE_TASK_NAMES.items()}


def class_index(name: str) -> int:
    """Position of a CheXpert class (or a CheXlocalize task name) in :data:`CLASSES`."""
    name = _FROM_TASK.get(name, name)
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}") from None


def to_chexlocalize_task(name: str) -> str:
    """CheXlocalize's task name for a localised CheXpert class ('Lung Opacity' -> 'Airspace Opacity')."""
    try:
        return CHEXLOCALIZE_TASK_NAMES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not one of CheXlocalize's 10 localised classes") from None


def from_chexlocalize_task(task: str) -> str:
    """CheXpert's class name for a CheXlocalize task name ('Airspace Opacity' -> 'Lung Opacity')."""
    try:
        return _FROM_TASK[task]
    except KeyError:
        raise ValueError(f"{task!r} is not a CheXlocalize task name") from None
