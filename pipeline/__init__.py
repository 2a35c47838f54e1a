"""dexport: export ML training data (token datasets, curated corpora) at cluster scale on Dask."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.api import DatasetManager
    from pipeline.corpus_api import corpus_stats, export_corpus, validate_export
    from pipeline.encode_api import encode_corpus

_API = {
    "DatasetManager": "pipeline.api",
    "export_corpus": "pipeline.corpus_api",
    "validate_export": "pipeline.corpus_api",
    "corpus_stats": "pipeline.corpus_api",
    "encode_corpus": "pipeline.encode_api",
}
__all__ = ["DatasetManager", "export_corpus", "validate_export", "corpus_stats", "encode_corpus"]


def __getattr__(name: str):
    # Imported lazily so ``python -m pipeline --help`` and worker start-up stay light.
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(name)
