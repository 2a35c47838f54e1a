from gpu.backend import Backend, array_namespace, gpu_available, select_backend  # noqa: F401
