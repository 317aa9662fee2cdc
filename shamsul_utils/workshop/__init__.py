"""The workshop kit: the explorer behind notebook 09, and participant copies of the exercises.

One job per module:

* :mod:`.uploads`: decode an uploaded PNG/JPEG radiograph, or refuse it in one line;
* :mod:`.explorer`: :class:`Explorer` holds a profile's trained model and explanation set;
  :meth:`Explorer.view` returns an :class:`ExplorerView` (image, heatmap, segmentation at a
  threshold, expert mask, IoU, hit, the 14 probabilities, and a figure of them);
  :meth:`Explorer.upload` adds an uploaded radiograph;
* :mod:`.app`: :class:`ExplorerApp`, the ipywidgets wired to an :class:`Explorer`;
* :mod:`.participants`: ``python -m shamsul_utils.workshop [--output workshop]``
  (``make workshop``) writes the participants' copies, solutions removed.
"""

from .app import MODES, ExplorerApp
from .explorer import Comparison, Explorer, ExplorerView, missing_run_message, predictions_table
from .participants import SOLUTION_TAG, main, strip_solutions, write_participant_copies
from .uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_SIDE, MIN_UPLOAD_SIDE, Upload, UploadError, decode_upload

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIDE", "MIN_UPLOAD_SIDE", "UploadError", "decode_upload", "Upload",
           "ExplorerView", "Explorer", "ExplorerApp", "Comparison", "MODES", "missing_run_message", "predictions_table", "SOLUTION_TAG", "strip_solutions", "write_participant_copies",
           "main"]
