-- Redis Cluster: revise the due members of a full quota set.
-- KEYS: a quota set. ARGV: triples of member, the score it was seen with, the PTTL of its
-- session's hash (-2: gone). Each member still at that score is dropped (gone) or re-scored to
-- its hash's expiry. Returns how many were dropped.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dropped = 0
for i = 1, #ARGV, 3 do
  local seen = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if seen and tonumber(seen) == tonumber(ARGV[i + 1]) then
    local pttl = tonumber(ARGV[i + 2])
    if pttl == -2 then
      redis.call('ZREM', KEYS[1], ARGV[i])
      dropped = dropped + 1
    elseif pttl >= 0 then
      redis.call('ZADD', KEYS[1], now + pttl, ARGV[i])
    else
      redis.call('ZADD', KEYS[1], now + 3600000, ARGV[i])
    end
  end
end
return dropped
