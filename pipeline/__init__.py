"""dexport: export ML training data (token datasets, curated corpora) at cluster scale on Dask."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.api import DatasetManager

__all__ = ["DatasetManager"]


def __getattr__(name: str):
    # Imported lazily so ``python -m pipeline --help`` and worker start-up stay light.
    if name == "DatasetManager":
        from pipeline.api import DatasetManager

        return DatasetManager
    raise AttributeError(name)
