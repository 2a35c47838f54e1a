"""dexport: export ML training data (token datasets, curated corpora) at cluster scale on Dask."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gpu  # noqa: F401 - first: picks numba's cache folder before any kernel module imports numba

if TYPE_CHECKING:
    from pipeline.corpus.api import export_corpus
    from pipeline.encode.api import encode_corpus
    from pipeline.tokens.api import DatasetManager
    from pipeline.tokens.blend import megatron_blend, neox_blend, read_neox_config
    from pipeline.validate.api import corpus_stats, validate_export

_API = {
    "DatasetManager": "pipeline.tokens.api",
    "export_corpus": "pipeline.corpus.api",
    "validate_export": "pipeline.validate.api",
    "corpus_stats": "pipeline.validate.api",
    "encode_corpus": "pipeline.encode.api",
    "megatron_blend": "pipeline.tokens.blend",
    "neox_blend": "pipeline.tokens.blend",
    "read_neox_config": "pipeline.tokens.blend",
}
__all__ = [
    "DatasetManager",
    "export_corpus",
    "validate_export",
    "corpus_stats",
    "encode_corpus",
    "megatron_blend",
    "neox_blend",
    "read_neox_config",
]


def __getattr__(name: str):
    # Imported lazily so ``python -m pipeline --help`` and worker start-up stay light.
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(name)
