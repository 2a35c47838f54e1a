"""Sub-commands of the ``dexport`` command line (one module each)."""
