"""Is an existing single-file output one that dexport wrote? (``--overwrite`` replaces only
what dexport wrote; a single file has no manifest beside it, so its content is looked at.)"""

from __future__ import annotations

import json
import re
import zipfile
from typing import Any

import numpy as np

from pipeline.errors import CorruptInput
from pipeline.io.compression import open_decompressed

# What a dexport JSONL export starts with (token_records.write_jsonl): the first record's
# fields in dexport's order, flat or nested in a batch.
_JSONL_START = re.compile(
    rb'^\{(?:"batch_id":-?\d+,"sequences":\[\{)?"index":-?\d+,(?:"batch_id":-?\d+,)?'
    rb'(?:"dataset":"(?:[^"\\]|\\.)*","dataset_sample_id":-?\d+,)?"content":'
)
_SNIFF_BYTES = 64 << 10


def is_token_export(fs: Any, path: str, fmt: str, compression: str | None) -> bool:
    """True when ``path`` is recognisably a dexport token export in ``fmt``.

    JSONL: the first record has dexport's fields in its order; CSV: the header starts
    ``index,content``; NPZ: the ``metadata`` member says ``"tool": "dexport"``; Parquet: the
    columns are dexport's (``index`` first and ``content``, or nested ``batch_id``,
    ``sequences``). A file that cannot be read as the format is not dexport's.
    """
    try:
        with fs.open(path, "rb") as raw:
            if fmt in ("jsonl", "csv"):
                head = open_decompressed(raw, compression, path).read(_SNIFF_BYTES)
                if fmt == "csv":
                    return head.startswith((b"index,content\r\n", b"index,content,"))
                return bool(_JSONL_START.match(head))
            if fmt == "npz":
                with zipfile.ZipFile(raw) as zf, zf.open("metadata.npy") as member:
                    meta = np.lib.format.read_array(member, allow_pickle=False)
                return json.loads(str(meta)).get("tool") == "dexport"
            import pyarrow.parquet as pq

            names = pq.read_schema(raw).names
            return (names[:1] == ["index"] and "content" in names) or names == [
                "batch_id",
                "sequences",
            ]
    except (ValueError, KeyError, AttributeError, EOFError, zipfile.BadZipFile, CorruptInput):
        return False  # unreadable as the format: not dexport's (storage errors propagate)
