"""The file formats dexport reads and writes, shared by the jobs: Megatron ``.bin``/``.idx``,
tokenizers, token-export records and their registry, the training schema and record checks,
corpus statistics, and reading finished exports back."""
