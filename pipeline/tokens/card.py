"""The dataset card (``README.md``) of a token export folder.

Its YAML front matter names the part files as the one ``train`` split
(``configs: - config_name: default, data_files: - split: train, path: part-*.jsonl``), so
``datasets.load_dataset(OUT)`` reads exactly the records and never ``_manifest.json``. NPZ parts
are NumPy archives, which ``datasets`` does not read: the card names them all the same, so
``load_dataset`` stops with "no supported data files" instead of loading the manifest as a
one-row dataset, and its text shows ``numpy.load``. The card is a pure function of the run's
parameters and totals (no time, no version): the same export gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import yaml

CARD = "README.md"
OWNED = (r"^README\.md$",)  # a run killed between the card and the manifest leaves it

_SELECTIONS = {
    "all": "every sample of the split",
    "sequences": "samples by id",
    "sequence_range": "a range of samples",
    "batches": "global batches by id",
    "batch_range": "a range of global batches",
    "documents": "whole corpus documents",
}


_SOURCES = (
    "`dataset`, `dataset_sample_id`: the blended dataset (prefix) the window was read from and "
    "its sample id there"
)
_DETAILS = "the first and last position in the document order and the token offsets there"


def render_card(params: dict[str, Any], totals: dict[str, Any], ext: str) -> str:
    """The whole ``README.md`` of a token export folder with part files ``part-*{ext}``.

    It names neither the output folder nor where the dataset lies (only its file name), so the
    same export written to another folder or read from S3 has the same card.
    """
    pattern = f"part-*{ext}"
    dataset = str(params.get("prefix") or "").rstrip("/").rsplit("/", 1)[-1] or "dataset"
    blend = (params.get("run") or {}).get("blend")
    if blend:
        split = params["run"].get("split")
        names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in blend.get(split) or []]
        dataset = "blend"
    name = f"{dataset} tokens"
    meta = {
        "pretty_name": name,
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": pattern}]}
        ],
    }
    fmt = params.get("format")
    run = params.get("run") or {}
    documents = params.get("selection") == "documents"
    what = _SELECTIONS.get(params.get("selection"), params.get("selection"))
    text = params.get("content") == "text"
    unit = "document" if documents else "window"
    content = f"text (`tokenizer.decode` of each {unit})" if text else f"token ids (each {unit})"
    lines = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n",
        f"# {name}\n",
        f"Token export written by dexport: {totals.get('records', 0):,} records "
        f"({totals.get('tokens', 0):,} tokens) of the dataset `{dataset}`, {what}, as "
        f"{content}."
        if not blend
        else f"Token export written by dexport: {totals.get('records', 0):,} records "
        f"({totals.get('tokens', 0):,} tokens) of a blend of {', '.join(f'`{n}`' for n in names)}"
        f", {what}, as {content}.",
    ]
    if run and not documents:
        lines.append(
            f"Training order: {run.get('convention')} convention, split {run.get('split')}, "
            f"seq_len {run.get('seq_len')}, seed {run.get('seed')}."
        )
    lines.append("")
    batches = params.get("selection") in ("batches", "batch_range")
    index = "document id" if documents else "sample id in training order"
    if fmt == "npz":
        read = "tokens" if not text else "text_bytes"
        lines += [
            "The parts are NumPy archives: read them with NumPy (Hugging Face `datasets` does not "
            "read `.npz`).\n",
            '```python\nimport numpy as np\n\npart = np.load("part-00000.npz", '
            f'allow_pickle=False)\n{read}, index = part["{read}"], part["index"]\n```\n',
            "## Arrays\n",
            f"- `index`: the {index} of each record",
        ]
        if text:
            lines.append(
                "- `text_bytes`, `text_offsets`: UTF-8 text of record `i` in bytes "
                "`text_offsets[i]:text_offsets[i+1]`"
            )
        elif documents:
            lines.append("- `tokens`, `offsets`: tokens of record `i` in `offsets[i]:offsets[i+1]`")
        else:
            lines.append("- `tokens`: one row of token ids per window")
        lines += ["- `batch_id`: the global batch of each sample"] if batches else []
        lines += [f"- {_SOURCES}"] if blend else []
        if params.get("doc_details"):
            lines.append("- `doc_index_f`, `doc_index_l`, `offset_f`, `offset_l`: " + _DETAILS)
        lines.append("- `metadata`: the export's parameters as a JSON string")
    else:
        lines += [
            "```python\nfrom datasets import load_dataset\n\nds = "
            'load_dataset("path/to/this/folder", split="train")\n```\n',
            "## Fields\n",
        ]
        if params.get("nested"):
            lines.append("One record per batch: `batch_id` and `sequences`, a list of records of:")
        lines.append(f"- `index`: the {index}")
        if batches and not params.get("nested"):
            lines.append("- `batch_id`: the global batch of the sample")
        lines += [f"- {_SOURCES}"] if blend else []
        lines.append("- `content`: " + ("the text" if text else "the token ids"))
        if params.get("doc_details"):
            names = "`doc_index_f`, `doc_index_l`, `offset_f`, `offset_l`"
            where = names if fmt == "csv" else f"`doc_details` ({names})"
            lines.append(f"- {where}: {_DETAILS}")
    lines += [
        "",
        f"`_manifest.json` lists every file (`{pattern}`, this card) with its rows, bytes and "
        "sha256, and the parameters of the run.\n",
    ]
    return "\n".join(lines)
