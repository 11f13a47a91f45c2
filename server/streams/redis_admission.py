"""Caps across the cluster: every process's live streams counted in Redis.

Each process keeps its counts in ``tw:{caps}:n:NODE`` (a hash: ``live``, ``unpaced``,
``pace``, ``c:CLIENT``), which expires with the process's lease unless renewed, so a dead
process's streams stop counting within seconds. One Lua script sums every process's
counts, checks the caps and counts the new stream, atomically: two processes cannot both
take the last slot. All the keys share the hash tag ``{caps}`` (one Cluster slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.errors import ServerBusy, StoreUnavailable
from server.settings import Settings
from server.streams.admission import Admission, Counts, refuse
from server.streams.record import StreamRecord

log = logging.getLogger("tokenwire.admission")

NODES = "tw:{caps}:nodes"

#: ARGV: node, client, unpaced (0/1), pace, max live, max per client, max unpaced, max
#: pace (0: none), ttl (ms). Returns {admitted (0/1), live, client's, unpaced, pace} as
#: they were before this stream.
ADMIT = """
local live, client, unpaced, pace = 0, 0, 0, 0
local field = 'c:' .. ARGV[2]
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = 'tw:{caps}:n:' .. node
  local v = redis.call('HMGET', key, 'live', field, 'unpaced', 'pace')
  if v[1] == false and redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[1], node)
  else
    live = live + (tonumber(v[1]) or 0)
    client = client + (tonumber(v[2]) or 0)
    unpaced = unpaced + (tonumber(v[3]) or 0)
    pace = pace + (tonumber(v[4]) or 0)
  end
end
local ok = live < tonumber(ARGV[5]) and client < tonumber(ARGV[6])
if ARGV[3] == '1' and unpaced >= tonumber(ARGV[7]) then ok = false end
if tonumber(ARGV[8]) > 0 and pace + tonumber(ARGV[4]) > tonumber(ARGV[8]) then ok = false end
if ok then
  local own = 'tw:{caps}:n:' .. ARGV[1]
  redis.call('HINCRBY', own, 'live', 1)
  redis.call('HINCRBY', own, field, 1)
  redis.call('HINCRBY', own, 'unpaced', tonumber(ARGV[3]))
  redis.call('HINCRBYFLOAT', own, 'pace', ARGV[4])
  redis.call('PEXPIRE', own, ARGV[9])
  redis.call('SADD', KEYS[1], ARGV[1])
end
return {ok and 1 or 0, live, client, unpaced, tostring(pace)}
"""


class RedisAdmission(Admission):
    """The caps over every process on one Redis (this process's counts kept here too)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, node: str) -> None:
        super().__init__(settings)
        self.redis = redis
        self.node = node
        self.key = f"tw:{{caps}}:n:{node}"
        self.ttl_ms = 3_000
        self._admit = redis.register_script(ADMIT)
        self._renewal: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._renewal = asyncio.create_task(self._renew(), name="tokenwire-caps")

    async def _renew(self) -> None:
        """Every second, write this process's counts whole (so a count that could not be
        taken back while Redis was away heals) and renew their expiry."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            counts: dict[str, float] = {"live": self.live, "unpaced": self._unpaced}
            counts["pace"] = self._pace
            counts.update({f"c:{client}": n for client, n in self._per_client.items()})
            try:
                async with self.redis.pipeline(transaction=True) as p:
                    p.delete(self.key)
                    p.hset(self.key, mapping=counts)  # type: ignore[arg-type]
                    p.pexpire(self.key, self.ttl_ms)
                    await p.execute()
            except RedisError as e:
                log.warning("Redis: renewing the counts of %s: %s", self.node, e)

    async def enter(self, stream: StreamRecord) -> None:
        s = self.settings
        try:
            reply = await self._admit(
                keys=[NODES],
                args=[
                    self.node,
                    stream.client,
                    int(stream.unpaced),
                    repr(stream.pace),
                    s.max_live_streams,
                    s.max_streams_per_client,
                    s.max_unpaced_streams,
                    repr(s.max_total_tokens_per_s),
                    self.ttl_ms,
                ],
            )
        except RedisError as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        admitted, live, client, unpaced, pace = reply
        if not int(admitted):
            refuse(
                s,
                Counts(int(live), int(client), int(unpaced), float(pace)),
                stream.unpaced,
                stream.pace,
            )
            raise ServerBusy("the cluster is at a cap", code="too_many_streams", retry_after=5)
        self.admit(stream)

    async def aclose(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal

    async def leave(self, stream: StreamRecord) -> None:
        self.release(stream)
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.hincrby(self.key, "live", -1)
                p.hincrby(self.key, f"c:{stream.client}", -1)
                p.hincrby(self.key, "unpaced", -int(stream.unpaced))
                p.hincrbyfloat(self.key, "pace", -stream.pace)
                await p.execute()
        except RedisError as e:
            log.warning("Redis: uncounting %s: %s", stream.id, e)
