"""Where stream logs live. ``MemoryStore`` now; a Redis Streams backend plugs in later."""

from server.store.base import LogStore
from server.store.memory import MemoryStore

__all__ = ["LogStore", "MemoryStore"]
