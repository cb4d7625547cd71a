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


# The reconciler (``serving/redis_reconcile.py``): one replica per event log at a time holds
# the lock, reads new fill and impression records and applies them here, with the log
# position, in one atomic step. Keys it builds from ARGV[2] (the prefix) are all on one
# Redis (like the flush, these scripts are not for Redis Cluster).
LOCK_LUA = """
-- KEYS[1]: the lock; ARGV: token, ttl ms. Take or renew it; 1 if held by the caller.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RECONCILE_LUA = """
-- KEYS: lock, cursor (hash: segment -> offset; '~v' once a pass has run, '~rebuilding'
-- while a first pass runs), reconciled-at. ARGV: token, prefix, now, render window, dedup seconds, lock ttl ms,
-- rebuilding ('1': a first pass over the log, Redis holding nothing yet), done ('1': the
-- pass reached the end of the log), expire limit, n offsets, then n (segment, offset)
-- pairs, then one argument per record: 'kind|decision id|line item|campaign|CPM micros|
-- decision time (s)', kind 'f' (fill) or 'i' (impression).
-- Returns {status (-1: lock lost), counted, reserved, released}.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0, 0, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local p = ARGV[2]
local now, window, dedup = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local rebuilding, done = ARGV[7] == '1', ARGV[8] == '1'
local limit = tonumber(ARGV[9])
local DAY, HOUR, KEEP = 86400, 3600, 35 * 86400
local resv, by_ts, render = p .. 'resv', p .. 'resv:ts', p .. 'render'
local counted, reserved, released = 0, 0, 0
local touched = {}

local function int(x) return string.format('%d', x) end
local function micros_up(units) return -math.floor(-units / 1000) end
local function micros_down(units) return math.floor(units / 1000) end

-- What is leased changes only where a lease exists (an item without a budget has none).
local function lease(key, amount)
  if amount ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, int(amount)) end
end
local function leases(item, campaign, day, money, impressions)
  lease(p .. 'lease:g:' .. item, impressions)
  lease(p .. 'lease:li:' .. item, money)
  lease(p .. 'lease:lid:' .. item .. ':' .. day, money)
  lease(p .. 'lease:c:' .. campaign, money)
end

-- Delivery counters: i/u counted, ri/ru reserved (li:<item>); u/ru (c:<campaign>,
-- lday:<item>:<day>).
local function add(item, campaign, day, field_i, field_u, n, units)
  local li, c, d = p .. 'li:' .. item, p .. 'c:' .. campaign, p .. 'lday:' .. item .. ':' .. day
  redis.call('HINCRBY', li, field_i, n)
  redis.call('HINCRBY', li, field_u, int(units))
  redis.call('HINCRBY', c, field_u, int(units))
  redis.call('HINCRBY', d, field_u, int(units))
  touched[item .. ':' .. campaign .. ':' .. day] = true
end

local function unreserve(id)
  local held = redis.call('HGET', resv, id)
  if not held then return nil end
  redis.call('HDEL', resv, id)
  redis.call('ZREM', by_ts, id)
  local item, campaign, units, day = string.match(held, '^(%d+):(%d+):(%d+):(%d+)$')
  units = tonumber(units)
  add(item, campaign, day, 'ri', 'ru', -1, -units)
  return {item, campaign, units, day}
end

for at = 11 + 2 * tonumber(ARGV[10]), #ARGV do
  local kind, id, item, campaign, units, ts =
    string.match(ARGV[at], '^(%a)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]+)$')
  units, ts = tonumber(units), tonumber(ts)
  local day, hour = math.floor(ts / DAY), math.floor(ts / HOUR)
  local seen_key = p .. 'counted:' .. hour
  local seen_ttl = math.floor((hour + 1) * HOUR + dedup - now)
  local seen = redis.call('SISMEMBER', seen_key, id) == 1
  if kind == 'f' then
    if redis.call('HEXISTS', resv, id) == 1 then
      -- read before (it cannot be: the position moves with the records)
    elseif seen or ts < now - window then
      -- counted before its fill was read (the impression already added to the leases),
      -- or past its render window before anyone read it: give back what it took.
      if not rebuilding then leases(item, campaign, day, -micros_down(units), -1) end
      if not seen and not rebuilding then redis.call('HINCRBY', render, 'expired', 1) end
    else
      redis.call('HSET', resv, id, item .. ':' .. campaign .. ':' .. int(units) .. ':' .. day)
      redis.call('ZADD', by_ts, ts, id)
      add(item, campaign, day, 'ri', 'ru', 1, units)
      reserved = reserved + 1
    end
  elseif not seen then
    local held = unreserve(id)
    if held then
      redis.call('HINCRBY', render, 'rendered', 1)
      local diff = units - held[3]
      if diff ~= 0 and not rebuilding then
        leases(item, campaign, day, diff > 0 and micros_up(diff) or -micros_down(-diff), 0)
      end
    elseif not rebuilding then
      -- Its fill is still to come, was released, or was never logged: it is spend all
      -- the same (the report counts it), so it is leased now.
      leases(item, campaign, day, micros_up(units), 1)
    end
    add(item, campaign, day, 'i', 'u', 1, units)
    if seen_ttl > 0 then
      redis.call('SADD', seen_key, id)
      redis.call('EXPIRE', seen_key, seen_ttl)
    end
    counted = counted + 1
  end
end

-- On a first pass, what is leased is set to cover what is counted and reserved (after that
-- every step above keeps it so).
local function cover(key, amount)
  local leased = tonumber(redis.call('GET', key))
  if leased == nil then
    if not rebuilding or amount <= 0 then return end
    redis.call('SET', key, int(amount), 'EX', KEEP)
  elseif leased < amount then
    redis.call('SET', key, int(amount), 'KEEPTTL')
  end
end
local function field(key, name) return tonumber(redis.call('HGET', key, name)) or 0 end
for spot in pairs(touched) do
  local item, campaign, day = string.match(spot, '^(%d+):(%d+):(%d+)$')
  local li, c, d = p .. 'li:' .. item, p .. 'c:' .. campaign, p .. 'lday:' .. item .. ':' .. day
  -- Replicas serving the item keep these alive to a week after its flight; a day's to 3 days.
  if redis.call('TTL', li) == -1 then redis.call('EXPIRE', li, KEEP) end
  if redis.call('TTL', c) == -1 then redis.call('EXPIRE', c, KEEP) end
  local keep_day = math.floor((day + 3) * DAY - now)
  if keep_day > 0 then redis.call('EXPIRE', d, keep_day) end
  if rebuilding then
    cover(p .. 'lease:g:' .. item, field(li, 'i') + field(li, 'ri'))
    cover(p .. 'lease:li:' .. item, micros_up(field(li, 'u') + field(li, 'ru')))
    cover(p .. 'lease:lid:' .. item .. ':' .. day, micros_up(field(d, 'u') + field(d, 'ru')))
    cover(p .. 'lease:c:' .. campaign, micros_up(field(c, 'u') + field(c, 'ru')))
  end
end

-- Reservations past their render window are released: the ad never played.
if done then
  local stale = redis.call('ZRANGEBYSCORE', by_ts, '-inf', '(' .. (now - window), 'LIMIT', 0, limit)
  for _, id in ipairs(stale) do
    local held = unreserve(id)
    if held then
      leases(held[1], held[2], held[4], -micros_down(held[3]), -1)
      redis.call('HINCRBY', render, 'expired', 1)
      released = released + 1
    else
      redis.call('ZREM', by_ts, id)
    end
  end
end

for i = 11, 10 + 2 * tonumber(ARGV[10]), 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], '~v', '1')
if rebuilding and not done then redis.call('HSET', KEYS[2], '~rebuilding', '1') end
if done then
  redis.call('HDEL', KEYS[2], '~rebuilding')
  if released < limit then redis.call('SET', KEYS[3], int(now * 1000)) end
end
return {1, counted, reserved, released}
"""
