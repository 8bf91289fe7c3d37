-- Raise an open reservation's tokens and dollars: every item fits and is
-- committed, or nothing changes. Windows that ended since the reserve are
-- neither checked nor changed (settle ignores them too).
-- KEYS: open set, token GCRA keys, window hashes, other lease sets to renew.
-- ARGV: now ('' = Redis TIME), id, lease_s, n_rates, n_windows, n_renew, then
--   per GCRA: interval_s, capacity, extra tokens;
--   per window: kind, window id, dt, du, limit_t, limit_u ('' = no limit).
-- Returns {1} (done), {2} (the reservation is not open), or
--   {0, kind (1 rate, 2 window), index, field, usage, retry_after}.
local now = clock(ARGV[1])
local id, lease = ARGV[2], tonumber(ARGV[3])
local nr, nw, nx = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local slack = 1e-4  -- base.RATE_SLACK
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], id))
if expiry == nil or expiry <= now then return {2} end

local worst = nil
local function reject(kind, index, field, usage, retry)
  if worst == nil or retry > worst[5] then worst = {kind, index, field, usage, retry} end
end

local tats, a = check_rates(nr, 1, 7, now, slack, reject)
local wa = a
local live = {}
for i = 1, nw do
  local key, kind, wid = KEYS[1 + nr + i], ARGV[a], ARGV[a + 1]
  if redis.call('HGET', key, 'w') == wid then
    live[i] = true
    local cur = counts(key, tonumber(wid))
    for f = 2, 3 do
      local limit = ARGV[a + 2 + f]
      if limit ~= '' and cur[f] + tonumber(ARGV[a + f]) > tonumber(limit) then
        reject(2, i - 1, f - 1, cur[f], window_end(kind, tonumber(wid)) - now)
      end
    end
  end
  a = a + 6
end
if worst ~= nil then
  return {0, worst[1], worst[2], worst[3], fmt(worst[4]), fmt(worst[5])}
end

for i = 1, nr do set_tat(KEYS[1 + i], tats[i], now) end
a = wa
for i = 1, nw do
  if live[i] then
    local key = KEYS[1 + nr + i]
    if ARGV[a + 2] ~= '0' then redis.call('HINCRBY', key, 't', ARGV[a + 2]) end
    if ARGV[a + 3] ~= '0' then redis.call('HINCRBY', key, 'u', ARGV[a + 3]) end
  end
  a = a + 6
end
local new_expiry = now + lease
local lease_ms = math.ceil(lease * 1000) + 1000
for i = 0, nx do
  local key = i == 0 and KEYS[1] or KEYS[1 + nr + nw + i]
  if expiry < new_expiry then redis.call('ZADD', key, 'XX', fmt(new_expiry), id) end
  if redis.call('PTTL', key) < lease_ms then redis.call('PEXPIRE', key, int(lease_ms)) end
end
return {1}
