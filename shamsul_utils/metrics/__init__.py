"""Evaluation metrics, one topic per module; this index re-exports their public names.

* :mod:`.localisation`: IoU, which images a mean counts, per-class mIoU, pointing game;
* :mod:`.bootstrap`: bootstrap intervals over images and seeds, paired differences;
* :mod:`.classification`: AUROC and AUPRC with intervals, weighted averages;
* :mod:`.faithfulness`: deletion and insertion (RISE);
* :mod:`.sanity`: parameter randomisation (Adebayo et al.).
"""

from .bootstrap import PairedDifference, bootstrap_ci, paired_bootstrap_difference, seed_bootstrap_ci
from .classification import auroc_auprc, auroc_rows, mean_auroc
from .faithfulness import FaithfulnessCurves, deletion_insertion_auc
from .localisation import iou, maximal_pixels, pointing_game, points_somewhere, select_iou, summarise_iou
from .sanity import parameter_randomisation_similarity, randomise_model

__all__ = [
    "iou",
    "select_iou",
    "summarise_iou",
    "pointing_game",
    "points_somewhere",
    "maximal_pixels",
    "bootstrap_ci",
    "seed_bootstrap_ci",
    "paired_bootstrap_difference",
    "PairedDifference",
    "auroc_auprc",
    "auroc_rows",
    "mean_auroc",
    "deletion_insertion_auc",
    "FaithfulnessCurves",
    "parameter_randomisation_similarity",
    "randomise_model",
]
