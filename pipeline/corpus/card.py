"""The dataset card (``README.md``) of a corpus export (histograms: ``pipeline.corpus.histogram``).

The YAML front matter declares the splits the way the Hugging Face Hub expects
(``configs: - config_name: default, data_files: - split: train, path: train.jsonl``), so
``datasets.load_dataset(OUT)`` finds exactly the split files (not the rejects, not the
statistics). Everything here is a pure function of the statistics: same export, same bytes
(the SVG histograms carry no software version or time stamp).
"""

from __future__ import annotations

from typing import Any

import yaml

IMAGE_DIR = "card"


def image_path(split: str) -> str:
    """Relative path of a split's histogram image."""
    return f"{IMAGE_DIR}/text_length_{split}.svg"


def front_matter(data_files: dict[str, str], pretty_name: str) -> str:
    """YAML front matter listing every split's files (a path or a glob pattern)."""
    meta = {
        "pretty_name": pretty_name,
        "task_categories": ["text-generation"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": path} for name, path in data_files.items()],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def render_card(
    stats: dict[str, Any],
    data_files: dict[str, str],
    *,
    pretty_name: str,
    example: dict | None,
    command: str | None,
    images: bool = True,
) -> str:
    """The whole ``README.md``."""
    splits = stats["splits"]
    tokens = any("total_tokens" in s for s in splits.values())
    header = ["split", "documents", "avg text length", "total chars", "total words"] + (
        ["total tokens"] if tokens else []
    )
    rows = [
        [name, s["count"], float(s["avg_text_length"]), s["total_chars"], s["total_words"]]
        + ([s.get("total_tokens", 0)] if tokens else [])
        for name, s in splits.items()
    ]
    total = stats["total_documents"]
    parts = [
        front_matter(data_files, pretty_name),
        f"# {pretty_name}\n",
        f"{total:,} documents in {len(splits)} splits, exported by dexport with schema mapping, "
        f"per-record validation and a deterministic split ({_split_words(stats)}).\n",
        "```python\nfrom datasets import load_dataset\n\nds = "
        'load_dataset("path/to/this/folder")\n```\n',
        "## Splits\n",
        _table(header, rows) + "\n",
    ]
    length = stats["text_length_stats"]
    parts += ["## Text length (characters)\n", _table(list(length), [list(length.values())]) + "\n"]
    if images:
        parts += [f"![text length, {name}]({image_path(name)})\n" for name in splits]
    if stats.get("domain_distribution"):
        rows = [
            [d, c, f"{100 * c / total:.1f}%" if total else "-"]
            for d, c in stats["domain_distribution"].items()
        ]
        parts += ["## Domains\n", _table(["domain", "documents", "share"], rows) + "\n"]
    quality = stats.get("quality_distribution") or {}
    if any(quality.values()):
        rows = [[k, v] for k, v in quality.items()]
        parts += [
            "## Quality\n",
            "high: score >= 0.8, medium: >= 0.6, low: below.\n",
            _table(["bucket", "documents"], rows) + "\n",
        ]
    acct = stats.get("accounting", {})
    rejected = stats.get("rejected") or {}
    parts += [
        "## Rejected records\n",
        f"{acct.get('input_lines', 0):,} input lines = {acct.get('exported', 0):,} exported + "
        f"{acct.get('rejected', 0):,} rejected + {acct.get('blank_lines', 0):,} blank. "
        "Rejected records are in `rejects/` with their file, line and reason.\n",
    ]
    if rejected:
        parts.append(_table(["reason", "records"], [[k, v] for k, v in rejected.items()]) + "\n")
    if example is not None:
        parts += ["## Record format\n", "```json\n" + _example_json(example) + "\n```\n"]
    if command:
        parts += ["## Reproduce\n", "```\n" + command + "\n```\n"]
    return "\n".join(parts)


def _split_words(stats: dict[str, Any]) -> str:
    split = stats.get("split") or {}
    ratios = ", ".join(f"{k} {v}" for k, v in (split.get("splits") or {}).items())
    return f"{ratios}; seed {split.get('seed')}, key {split.get('key')}, {split.get('mode')} mode"


def _example_json(example: dict) -> str:
    import json

    def shorten(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: shorten(x) for k, x in v.items()}
        if isinstance(v, str) and len(v) > 80:
            return v[:77] + "..."
        return v

    return json.dumps(shorten(example), ensure_ascii=False, indent=2)
