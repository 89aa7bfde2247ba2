-- Create a session; never overwrites an existing id unless asked to replace it.
-- KEYS: hash, marker, and on a single Redis the model's and the owner's quota sets (sorted sets
--       of session ids scored by the session's known expiry; on Redis Cluster they live in
--       other slots and a create reserves in them first, see redis_cluster.py).
-- ARGV: ttl_ms, tombstone_ms, created_at, replace ("1"/"0"), per_model, per_key (limits of
--       the quota sets passed in KEYS, 0: none), session id, key prefix, owner, deadline (ms of
--       server time a Cluster reservation holds until, 0: none), then field/value pairs.
-- Returns 1 created (or this very create was already applied: its expiry is refreshed, a
-- propagated write), 0 the id exists, -1 the model's quota is full, -2 the owner's, -3 the
-- reservation's deadline passed. With replace, an existing session under the id is swapped
-- for the new one atomically.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[7]
local counted = #KEYS == 4
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_at') == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return 1
  end
  if ARGV[4] ~= '1' then return 0 end
  redis.call('DEL', KEYS[1])
  if counted then
    -- a replaced session leaves the sets first (never counted twice)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  end
end
local deadline = tonumber(ARGV[10])
if deadline > 0 and now > deadline then return -3 end
local per_model, per_key = 0, 0
if counted then
  -- Members whose recorded expiry has passed are re-checked (PTTL of their hash): the live
  -- ones are re-scored, the gone ones dropped, so an expired session frees its slot the
  -- moment it expires.
  local function prune(set, due)
    for _, member in ipairs(due) do
      local pttl = redis.call('PTTL', ARGV[8] .. 's:{' .. member .. '}')
      if pttl == -2 then
        redis.call('ZREM', set, member)
      elseif pttl == -1 then
        redis.call('ZADD', set, now + tonumber(ARGV[2]), member)
      else
        redis.call('ZADD', set, now + pttl, member)
      end
    end
  end
  local function full(set, limit)
    if limit <= 0 then return false end
    prune(set, redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 32))
    if redis.call('ZCARD', set) < limit then return false end
    prune(set, redis.call('ZRANGEBYSCORE', set, '-inf', now))
    return redis.call('ZCARD', set) >= limit
  end
  per_model, per_key = tonumber(ARGV[5]), tonumber(ARGV[6])
  if full(KEYS[3], per_model) then return -1 end
  if full(KEYS[4], per_key) then return -2 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[9], 'PX', tonumber(ARGV[1]) + tonumber(ARGV[2]))
if per_model > 0 then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), id) end
if per_key > 0 then redis.call('ZADD', KEYS[4], now + tonumber(ARGV[1]), id) end
return 1
