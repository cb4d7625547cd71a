"""The Lua scripts of the shared ledger: each runs atomically inside Redis.

See ``serving/redis_ledger.py`` for what they are for.
"""

from __future__ import annotations

CAPS_LUA = """
-- KEYS: distinct cap counters. ARGV[1]: number of candidates, then per candidate n and
-- n triples (KEYS index, count, ttl). Counts the first candidate under all its caps; a
-- counter's expiry is set when it is created (its window's end is fixed by then).
local at = 2
for candidate = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[at])
  local free = true
  for r = 0, n - 1 do
    local rule = at + 1 + 3 * r
    local used = tonumber(redis.call('GET', KEYS[tonumber(ARGV[rule])])) or 0
    if used >= tonumber(ARGV[rule + 1]) then
      free = false
      break
    end
  end
  if free then
    for r = 0, n - 1 do
      local rule = at + 1 + 3 * r
      local key = KEYS[tonumber(ARGV[rule])]
      if redis.call('INCR', key) == 1 then
        redis.call('EXPIRE', key, ARGV[rule + 2])
      end
    end
    return candidate - 1
  end
  at = at + 1 + 3 * n
end
return -1
"""


LEASE_LUA = """
-- KEYS: amounts leased so far (micros or impressions). ARGV per key: want, budget, floor,
-- held, ttl. Grants min(want, budget - leased); a negative want gives that much back; when
-- the budget was lowered below what is leased, takes back up to what the caller holds.
-- Returns per key: the grant (negative: taken back) and what is left to lease.
local out = {}
for i, key in ipairs(KEYS) do
  local at = 5 * (i - 1)
  local want, budget = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local floor, held, ttl = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
  local leased = tonumber(redis.call('GET', key)) or 0
  if leased < floor then
    redis.call('SET', key, ARGV[at + 3])
    leased = floor
  end
  local grant
  if want < 0 then
    grant = math.max(want, -leased)
  elseif leased > budget then
    grant = -math.min(held, leased - budget)
  else
    grant = math.min(want, budget - leased)
  end
  if grant ~= 0 then
    redis.call('INCRBY', key, string.format('%d', grant))
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  out[2 * i - 1] = grant
  out[2 * i] = budget - leased - grant
end
return out
"""


FLUSH_LUA = """
-- KEYS[1]: replica heartbeats; ARGV[1..3]: replica id, now, stale cutoff. Then per counter
-- KEYS[i] and ARGV field ('' for a plain key), floor, delta, ttl: raise the counter to the
-- floor, add the delta, return its value (strings: exact beyond 2^53).
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local out = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  local key, at = KEYS[i], 3 + 4 * (i - 2)
  local name, floor, delta, ttl = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
  local value
  if name == '' then value = redis.call('GET', key) else value = redis.call('HGET', key, name) end
  if (tonumber(value) or 0) < tonumber(floor) then
    if name == '' then redis.call('SET', key, floor) else redis.call('HSET', key, name, floor) end
  end
  if delta ~= '0' then
    if name == '' then
      redis.call('INCRBY', key, delta)
    else
      redis.call('HINCRBY', key, name, delta)
    end
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  if name == '' then out[i] = redis.call('GET', key) else out[i] = redis.call('HGET', key, name) end
end
return out
"""
