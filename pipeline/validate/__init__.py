"""Checks on finished exports: ``validate`` (records, manifest checksums, statistics), ``stats``
(recompute ``dataset_stats.json``) and ``summary`` (documents per pipeline stage).

Read-only: nothing here writes into an export. ``export`` checks every file against the format
contracts (``formats.token_checks`` for token exports, ``formats.record_checks`` for corpus
records); ``api`` holds the Python entry points.
"""
