"""The output formats of token exports: one registry the CLI, the API, the jobs and the checks use.

Adding a format is one entry in :data:`FORMATS`: a writer of one chunk, a joiner of part files
into one file, the file suffix, whether it holds nested batches and takes ``--compression``,
and the checker ``dexport validate`` runs on its files. This module imports nothing heavy (the
command line reads the names for ``--format``); the functions behind an entry load on use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any


@dataclass(frozen=True)
class TokenFormat:
    """One output format of token exports."""

    name: str
    suffix: str
    nestable: bool = False  # can hold one record per batch (``--nested``)
    compressible: bool = False  # takes ``--compression gzip|zstd``

    def write(self, handle: IO[bytes], records: Any, header: bool) -> None:
        """Write one chunk of :class:`~pipeline.formats.token_records.TokenRecords`."""
        from pipeline.formats import token_records as tr

        if self.name == "npz":
            tr.write_npz_arrays(handle, tr.npz_arrays(records, records.metadata or {}))
        else:
            getattr(tr, f"write_{self.name}")(handle, records, header=header)

    def line_frames(self, records: Any) -> Any:
        """``(before, after)`` byte columns around each record's text when the detokenizer
        writes this format's lines itself (JSONL: each text as a JSON literal, see
        ``gpu.detok.Detokenizer.decode_to_bytes``), else None."""
        if self.name != "jsonl":
            return None
        from pipeline.formats import token_records as tr

        return tr.json_frames(records)

    @property
    def concatenated(self) -> bool:
        """Whether parts join by plain concatenation (JSONL, CSV, and their gzip/zstd)."""
        return self.name not in ("npz", "parquet")

    def join(self, fs: Any, sources: list[str], target: str) -> None:
        """Join part files (in order) into one file ``target``."""
        from pipeline.io import assemble

        {"npz": assemble.join_npz, "parquet": assemble.join_parquet}.get(
            self.name, assemble.concatenate
        )(fs, sources, target)

    def check(self, export: Any, path: str, rel: str, split: Any, digest: Any, show: int) -> None:
        """Check every record of one file of this format (``dexport validate``)."""
        from pipeline.formats import token_checks

        getattr(token_checks, f"check_{self.name}")(export, path, rel, split, digest, show)


FORMATS: dict[str, TokenFormat] = {
    f.name: f
    for f in (
        TokenFormat("jsonl", ".jsonl", nestable=True, compressible=True),
        TokenFormat("csv", ".csv", compressible=True),
        TokenFormat("npz", ".npz"),
        TokenFormat("parquet", ".parquet", nestable=True),
    )
}


def format_of_file(name: str) -> TokenFormat | None:
    """The format a file name asks for (``x.jsonl``, ``x.csv.gz``, ``part-00000.npz``), or None."""
    base = name.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".zst")
    return next((f for f in FORMATS.values() if base.endswith(f.suffix)), None)
