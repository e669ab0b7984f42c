"""What a list of inputs names: image files, or a dataset (a folder, a glob or a manifest).

Kept free of torch and the model libraries so that the command line can decide before importing them.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

#: File suffixes read as images when a folder or glob names a dataset.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Manifest files: one path per line (.txt) or one JSON object per line (.jsonl).
MANIFEST_SUFFIXES = (".txt", ".jsonl")


def is_dataset(sources: Sequence[str | Path]) -> bool:
    """True when the inputs name a dataset (a folder, a glob or a manifest) rather than image files."""
    return any(Path(s).is_dir() or glob.has_magic(str(s)) or Path(s).suffix.lower() in MANIFEST_SUFFIXES
               for s in sources)
