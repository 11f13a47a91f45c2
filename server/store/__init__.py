"""Where stream logs live: ``MemoryStore`` (one process) or ``RedisStore`` (shared)."""

from server.settings import Settings
from server.store.base import LogStore
from server.store.memory import MemoryStore


def build_store(settings: Settings) -> LogStore:
    """The store ``settings.store`` names: ``memory``, a ``redis://`` URL, or a Redis
    Cluster's ``redis+cluster://``."""
    if settings.store == "memory":
        return MemoryStore(settings.max_log_events)
    from server.store.redis import RedisStore

    return RedisStore(
        settings.store,
        settings.max_log_events,
        retention_s=settings.retention_s,
        # A generation that never ends (its process died) cannot keep its log forever.
        open_ttl_s=settings.log_open_ttl_s,
        max_connections=settings.redis_max_connections,
        linger_s=settings.redis_write_linger_ms / 1000,
    )


__all__ = ["LogStore", "MemoryStore", "build_store"]
