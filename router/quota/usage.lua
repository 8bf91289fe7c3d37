-- Read a tenant's counters in the current minute, day and month, and its open reservations.
-- KEYS: minute hash, day hash, month hash, open set.  ARGV: now ('' = Redis TIME).
local now = clock(ARGV[1])
local out = {}
for i, kind in ipairs({'minute', 'day', 'month'}) do
  local c = counts(KEYS[i], window_id(kind, now))
  out[#out + 1] = int(c[1])
  out[#out + 1] = int(c[2])
  out[#out + 1] = int(c[3])
end
out[#out + 1] = redis.call('ZCOUNT', KEYS[4], '(' .. fmt(now), '+inf')
return out
