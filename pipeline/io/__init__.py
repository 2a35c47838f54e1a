"""Reading and writing bytes: ``storage`` (url → fsspec, atomic publish), ``compression``,
``records`` (JSONL/Parquet inputs → partitions → records) and ``assemble`` (parts → one file)."""
