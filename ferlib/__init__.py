"""ferlib: facial emotion recognition on FER+.

Modules: data (FER+ splits, label modes, Dataset), transforms, generate (the FER+ folders from the CSVs), synthetic
(made-up CSVs for smoke runs), models, train, tune, evaluate, plots, faces (detection and alignment), aligned_data
(the face-aligned training set), video (the live pipeline behind video_application.py), files (writing
results whole or not at all).
"""

from ferlib.data import CLASS_NAMES, LABEL_MODES, FerPlusDataset, FerPlusSplit, load_dataset, load_split

__all__ = ["CLASS_NAMES", "LABEL_MODES", "FerPlusDataset", "FerPlusSplit", "load_dataset", "load_split"]
