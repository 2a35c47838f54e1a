"""The engine every job runs on: ``runner`` (tasks in flight, resume, cancel), ``executor`` (threads
of this process or Dask), ``output`` (lock, overwrite/resume rules, publish, manifest last) and
``progress`` (a bar on a terminal, plain lines in logs). See docs/architecture.md."""
