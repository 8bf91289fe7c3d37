-- Shared helpers, prepended to reserve.lua, top_up.lua, settle.lua and usage.lua.
-- Windows are UTC calendar windows computed from the script's clock, so every
-- client agrees on them whatever its own clock says.

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end  -- a test's injected clock
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end

-- Days since 1970-01-01 -> (year, month); H. Hinnant's civil_from_days.
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- First day of (year, month) as days since 1970-01-01; days_from_civil.
local function first_day(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function window_id(kind, now)
  if kind == 'minute' then return math.floor(now / 60) end
  if kind == 'day' then return math.floor(now / 86400) end
  local y, m = civil(math.floor(now / 86400))
  return (y - 1970) * 12 + m - 1
end

local function window_end(kind, wid)
  if kind == 'minute' then return (wid + 1) * 60 end
  if kind == 'day' then return (wid + 1) * 86400 end
  local n = wid + 1
  return first_day(1970 + math.floor(n / 12), n % 12 + 1) * 86400
end

-- Counters (requests, tokens, nano-dollars) of window `wid`; zeros once it is over.
local function counts(key, wid)
  local v = redis.call('HMGET', key, 'w', 'r', 't', 'u')
  if tonumber(v[1]) ~= wid then return {0, 0, 0} end
  return {tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0}
end

-- Add (r, t, u), given as integer strings, to the current window, starting it afresh if needed.
local function add_current(key, kind, now, r, t, u)
  local wid = window_id(kind, now)
  if tonumber(redis.call('HGET', key, 'w')) ~= wid then
    redis.call('DEL', key)
    redis.call('HSET', key, 'w', int(wid), 'r', r, 't', t, 'u', u)
    redis.call('PEXPIRE', key, int(math.ceil((window_end(kind, wid) - now) * 1000) + 1000))
  else
    if r ~= '0' then redis.call('HINCRBY', key, 'r', r) end
    if t ~= '0' then redis.call('HINCRBY', key, 't', t) end
    if u ~= '0' then redis.call('HINCRBY', key, 'u', u) end
  end
end

-- Store a GCRA theoretical arrival time; the key lives until the bucket has drained.
local function set_tat(key, tat, now)
  if tat <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, fmt(tat), 'PX', int(math.ceil((tat - now) * 1000) + 1000))
  end
end

-- GCRA check of `nr` rate limits (reserve and top-up): TAT keys at KEYS[key_offset + i],
-- (interval, cap, amount) triples in ARGV from `a`. `reject` hears every limit that would
-- overflow; returns the new TATs and the next ARGV index.
local function check_rates(nr, key_offset, a, now, slack, reject)
  local tats = {}
  for i = 1, nr do
    local interval, cap, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local tat = tonumber(redis.call('GET', KEYS[key_offset + i]))
    local start = (tat and tat > now) and tat or now
    local new_tat = start + amount * interval
    if new_tat - now > (cap + slack) * interval then
      reject(1, i - 1, 0, (start - now) / interval, new_tat - now - cap * interval)
    end
    tats[i] = new_tat
    a = a + 3
  end
  return tats, a
end
