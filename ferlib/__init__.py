"""ferlib: facial emotion recognition on FER+ (dataset, transforms, models, training, evaluation, faces)."""

from ferlib.data import CLASS_NAMES, LABEL_MODES, FerPlusDataset, FerPlusSplit, load_dataset, load_split

__all__ = ["CLASS_NAMES", "LABEL_MODES", "FerPlusDataset", "FerPlusSplit", "load_dataset", "load_split"]
