-- Close a reservation: leave the tenant's open set (a no-op returning 0 if it
-- was already closed), move GCRA buckets and window counters, release leases.
-- KEYS: open set, GCRA keys, window hashes, lease sets to release, [void set].
-- ARGV: now ('' = Redis TIME), id, n_rates, n_windows, n_release, void_s ('' = not a void),
--   then per GCRA: interval_s, delta;
--   per window: kind, window id ('' = current), dr, dt, du (integer strings).
-- A void of a reservation that is not open records its id in the void set, so
-- that its reserve, should it still arrive, is refused.
local now = clock(ARGV[1])
local id = ARGV[2]
local nr, nw, nx = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('ZREM', KEYS[1], id) == 0 then
  if ARGV[6] ~= '' then
    local void, ttl = KEYS[2 + nr + nw + nx], tonumber(ARGV[6])
    redis.call('ZREMRANGEBYSCORE', void, '-inf', fmt(now))
    redis.call('ZADD', void, fmt(now + ttl), id)
    local ms = math.ceil(ttl * 1000) + 1000
    if redis.call('PTTL', void) < ms then redis.call('PEXPIRE', void, int(ms)) end
  end
  return 0
end
local a = 7
for i = 1, nr do
  local key = KEYS[1 + i]
  local interval, delta = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local tat = tonumber(redis.call('GET', key))
  if delta > 0 then
    local start = (tat and tat > now) and tat or now
    set_tat(key, start + delta * interval, now)
  elseif tat then
    set_tat(key, tat + delta * interval, now)
  end
  a = a + 2
end
for i = 1, nw do
  local key, kind, wid = KEYS[1 + nr + i], ARGV[a], ARGV[a + 1]
  local r, t, u = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  if wid == '' then
    add_current(key, kind, now, r, t, u)
  elseif redis.call('HGET', key, 'w') == wid then
    -- still the window the reservation counted in; an ended one no longer matters
    if r ~= '0' then redis.call('HINCRBY', key, 'r', r) end
    if t ~= '0' then redis.call('HINCRBY', key, 't', t) end
    if u ~= '0' then redis.call('HINCRBY', key, 'u', u) end
  end
  a = a + 5
end
for i = 1, nx do redis.call('ZREM', KEYS[1 + nr + nw + i], id) end
return 1
