"""Getting a ``distributed.Client``: embedded cluster, existing scheduler, or GPU cluster."""

from cluster.client import dashboard_link, get_client

__all__ = ["dashboard_link", "get_client"]
