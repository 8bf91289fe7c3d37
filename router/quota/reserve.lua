-- Check every item of a reservation and commit them all, or none.
-- KEYS: GCRA keys, then window hashes, then lease sets (KEYS[n_rates + n_windows + 1]
--   is the tenant's set of open reservations), then the tenant's void set.
-- ARGV: now ('' = Redis TIME), id, lease_s, n_rates, n_windows, n_slots, then
--   per GCRA: interval_s, capacity, amount;
--   per window: kind, r, t, u, limit_r, limit_t, limit_u ('' = no limit);
--   per lease set: limit ('' = none).
-- Returns {1, minute_id, day_id, month_id}, or
--   {0, kind (1 rate, 2 window, 3 slot), index, field, usage, retry_after ('' = unknown)},
--   or {2} when the id was voided (its caller gave up before this arrived).
local now = clock(ARGV[1])
local id, lease = ARGV[2], tonumber(ARGV[3])
local nr, nw, ns = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local slack = 1e-4  -- base.RATE_SLACK

if redis.call('ZSCORE', KEYS[nr + nw + ns + 1], id) then return {2} end
if redis.call('ZSCORE', KEYS[nr + nw + 1], id) then
  -- the same reserve sent again after a timeout: it is already taken, take nothing twice
  return {1, window_id('minute', now), window_id('day', now), window_id('month', now)}
end

local worst = nil
local function reject(kind, index, field, usage, retry)
  local w = retry or -1
  if worst == nil or w > worst[6] then worst = {kind, index, field, usage, retry, w} end
end

-- check
local tats, a = check_rates(nr, 0, 7, now, slack, reject)
local wa = a
for i = 1, nw do
  local kind = ARGV[a]
  local wid = window_id(kind, now)
  local cur = counts(KEYS[nr + i], wid)
  for f = 1, 3 do
    local limit = ARGV[a + 3 + f]
    if limit ~= '' and cur[f] + tonumber(ARGV[a + f]) > tonumber(limit) then
      reject(2, i - 1, f - 1, cur[f], window_end(kind, wid) - now)
    end
  end
  a = a + 7
end
local sa = a
for i = 1, ns do
  local key, limit = KEYS[nr + nw + i], ARGV[a]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))  -- lapsed leases (crashed callers)
  if limit ~= '' then
    local held = redis.call('ZCARD', key)
    if held + 1 > tonumber(limit) then reject(3, i - 1, 0, held, nil) end
  end
  a = a + 1
end
if worst ~= nil then
  return {0, worst[1], worst[2], worst[3], fmt(worst[4]), worst[5] and fmt(worst[5]) or ''}
end

-- commit
for i = 1, nr do set_tat(KEYS[i], tats[i], now) end
a = wa
for i = 1, nw do
  add_current(KEYS[nr + i], ARGV[a], now, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
  a = a + 7
end
local expiry = now + lease
local lease_ms = math.ceil(lease * 1000) + 1000
for i = 1, ns do
  local key = KEYS[nr + nw + i]
  redis.call('ZADD', key, fmt(expiry), id)
  if redis.call('PTTL', key) < lease_ms then redis.call('PEXPIRE', key, int(lease_ms)) end
end
return {1, window_id('minute', now), window_id('day', now), window_id('month', now)}
