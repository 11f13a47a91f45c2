"""Caps across the cluster: every process's live streams counted in Redis.

Three keys, all with the hash tag ``{caps}`` (one Cluster slot), all named in each
script's KEYS::

    tw:{caps}:total       a hash: the cluster's counts (``live``, ``unpaced``, ``pace``,
                          ``c:CLIENT``): what the caps are checked against
    tw:{caps}:n:PROCESS   a hash: one process's share of them (PROCESS: ``NODE|INSTANCE``)
    tw:{caps}:nodes       a sorted set: the processes that count, scored by when their
                          lease ends (Redis's own clock, ms)

One Lua script checks the caps against the totals and counts the new stream in both
hashes, atomically: N processes racing for the last slots admit exactly as many streams
as there are slots. Every second each process renews its lease and rewrites its share
whole (so a count it could not take back while Redis was away heals), and takes the
share of every process whose lease ended out of the totals (a dead process's streams
stop counting within seconds). A process's own writes are serialised (one lock), so a
rewrite never races one of its admissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from server.errors import ServerBusy, StoreUnavailable
from server.settings import Settings
from server.store.redis import REDIS_ERRORS, RedisClient
from server.streams.admission import Admission, Counts, refuse
from server.streams.record import StreamRecord

log = logging.getLogger("tokenwire.admission")

TOTAL = "tw:{caps}:total"
NODES = "tw:{caps}:nodes"


def share_key(process: str) -> str:
    return f"tw:{{caps}}:n:{process}"


#: Shared by the scripts: the time in ms on Redis's clock; add the hash ``src`` times
#: ``sign`` to ``dst``, dropping fields that reach 0 (and the paces' float dust at rest).
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function add(dst, fields, sign)
  for i = 1, #fields, 2 do
    local f, v = fields[i], tonumber(fields[i + 1]) * sign
    if v == 0 then
      -- (nothing to add; and HINCRBY refuses Lua's -0)
    elseif f == 'pace' then
      redis.call('HINCRBYFLOAT', dst, f, string.format('%.15g', v))
    elseif redis.call('HINCRBY', dst, f, v) == 0 and f ~= 'live' then
      redis.call('HDEL', dst, f)
    end
  end
  if (tonumber(redis.call('HGET', dst, 'live')) or 0) <= 0 then
    redis.call('HSET', dst, 'pace', 0)
  end
end
local function stream(client, unpaced, pace)
  return {'live', 1, 'c:' .. client, 1, 'unpaced', unpaced, 'pace', pace}
end
"""

#: KEYS: total, this process's share, nodes. ARGV: process, client, unpaced (0/1), pace,
#: max live, max per client, max unpaced, max pace (0: none), lease (ms). Returns
#: {admitted (0/1), live, client's, unpaced, pace} as they were before this stream.
ADMIT = (
    _LIB
    + """
local field = 'c:' .. ARGV[2]
local v = redis.call('HMGET', KEYS[1], 'live', field, 'unpaced', 'pace')
local live, client = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local unpaced, pace = tonumber(v[3]) or 0, tonumber(v[4]) or 0
local ok = live < tonumber(ARGV[5]) and client < tonumber(ARGV[6])
if ARGV[3] == '1' and unpaced >= tonumber(ARGV[7]) then ok = false end
if tonumber(ARGV[8]) > 0 and pace + tonumber(ARGV[4]) > tonumber(ARGV[8]) then ok = false end
if ok then
  local counts = stream(ARGV[2], ARGV[3], ARGV[4])
  add(KEYS[1], counts, 1)
  add(KEYS[2], counts, 1)
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[9]), ARGV[1])
end
return {ok and 1 or 0, live, client, unpaced, tostring(pace)}
"""
)

#: KEYS: total, this process's share. ARGV: client, unpaced (0/1), pace. Only while the
#: share exists (if it was reaped, the totals no longer hold this stream).
LEAVE = (
    _LIB
    + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local counts = stream(ARGV[1], ARGV[2], ARGV[3])
add(KEYS[1], counts, -1)
add(KEYS[2], counts, -1)
return 1
"""
)

#: KEYS: total, this process's share, nodes. ARGV: process, lease (ms), then the share's
#: fields and values as this process counts them. Rewrites the share (and the totals by
#: the difference) and renews the lease. Returns the processes whose lease ended.
RENEW = (
    _LIB
    + """
add(KEYS[1], redis.call('HGETALL', KEYS[2]), -1)
redis.call('DEL', KEYS[2])
local counts = {}
for i = 3, #ARGV do counts[#counts + 1] = ARGV[i] end
if #counts > 0 then
  redis.call('HSET', KEYS[2], unpack(counts))
  add(KEYS[1], counts, 1)
end
local now = now_ms()
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
"""
)

#: KEYS: total, the process's share, nodes. ARGV: process, 1 to reap it even if its lease
#: has not ended (this process leaving). Takes its share out of the totals, once.
REAP = (
    _LIB
    + """
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score then return 0 end
if ARGV[2] ~= '1' and tonumber(score) > now_ms() then return 0 end
add(KEYS[1], redis.call('HGETALL', KEYS[2]), -1)
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)


class RedisAdmission(Admission):
    """The caps over every process on one Redis (this process's counts kept here too)."""

    def __init__(self, settings: Settings, redis: RedisClient, node: str) -> None:
        super().__init__(settings)
        self.redis = redis
        self.node = node
        #: This process (a restarted process with the same node id is another one).
        self.process = f"{node}|{secrets.token_hex(6)}"
        self.key = share_key(self.process)
        self.ttl_ms = 3_000
        self._admit = redis.register_script(ADMIT)
        self._leave = redis.register_script(LEAVE)
        self._renew_script = redis.register_script(RENEW)
        self._reap = redis.register_script(REAP)
        self._lock = asyncio.Lock()  # this process's writes of its counts, one at a time
        self._renewal: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.renew()
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        self._renewal = asyncio.create_task(self._keep_renewing(), name="tokenwire-caps")

    async def _keep_renewing(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await self.renew()
            except REDIS_ERRORS as e:
                log.warning("Redis: renewing the counts of %s: %s", self.process, e)

    async def renew(self) -> None:
        """Rewrite this process's share whole, renew its lease, reap the dead."""
        async with self._lock:
            counts: dict[str, float] = {}
            if self.live:
                counts = {"live": self.live, "unpaced": self._unpaced, "pace": self._pace}
                counts.update({f"c:{c}": n for c, n in self._per_client.items()})
            flat = [x for kv in counts.items() for x in kv]
            dead = await self._renew_script(
                keys=[TOTAL, self.key, NODES], args=[self.process, self.ttl_ms, *flat]
            )
        for member in dead:
            process = member.decode()
            if await self._reap(keys=[TOTAL, share_key(process), NODES], args=[process, 0]):
                log.warning("the streams of process %s stopped counting (lease ended)", process)

    async def enter(self, stream: StreamRecord) -> None:
        s = self.settings
        async with self._lock:
            try:
                reply = await self._admit(
                    keys=[TOTAL, self.key, NODES],
                    args=[
                        self.process,
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
            except REDIS_ERRORS as e:
                raise StoreUnavailable(f"Redis: {e}") from None
            admitted, live, client, unpaced, pace = reply
            if int(admitted):
                self.admit(stream)
                return
        refuse(
            s,
            Counts(int(live), int(client), int(unpaced), float(pace)),
            stream.unpaced,
            stream.pace,
        )
        raise ServerBusy("the cluster is at a cap", code="too_many_streams", retry_after=5)

    async def leave(self, stream: StreamRecord) -> None:
        async with self._lock:
            self.release(stream)
            try:
                await self._leave(
                    keys=[TOTAL, self.key],
                    args=[stream.client, int(stream.unpaced), repr(stream.pace)],
                )
            except REDIS_ERRORS as e:
                log.warning("Redis: uncounting %s: %s", stream.id, e)

    async def aclose(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        with contextlib.suppress(*REDIS_ERRORS):
            async with self._lock:
                await self._reap(keys=[TOTAL, self.key, NODES], args=[self.process, 1])
