-- Save a step: a check-and-set on the position, recognising a re-sent save by its token.
-- KEYS: hash, marker. ARGV: expected, position, state, ttl_ms, tombstone_ms, token, history,
--       created_at, token window (entries).
-- Returns {1, position} written (or written before by this very save), {0, stored} conflict,
-- {-1} not found, {-2} expired.
local cur = redis.call('HGET', KEYS[1], 'position')
if not cur then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {-2} end
  return {-1}
end
local tokens = redis.call('HGET', KEYS[1], 'tokens') or ''
local at = string.find(tokens, ARGV[6] .. '=', 1, true)
if at then
  -- Applied already (its reply was lost). The expiry refresh is a propagated write, so that a
  -- WAIT after this re-send (Redis Cluster with wait_replicas) also covers the original write.
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1, tonumber(string.sub(tokens, at + 33, at + 52))}
end
if tonumber(cur) ~= tonumber(ARGV[1]) or redis.call('HGET', KEYS[1], 'created_at') ~= ARGV[8] then
  return {0, tonumber(cur)}
end
local entry = ARGV[6] .. '=' .. string.format('%020d', tonumber(ARGV[2])) .. ';'
tokens = string.sub(tokens .. entry, -54 * tonumber(ARGV[9]))
redis.call('HSET', KEYS[1], 'position', ARGV[2], 'state', ARGV[3], 'ttl_ms', ARGV[4], 'tokens', tokens)
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'history', ARGV[7])
else
  redis.call('HDEL', KEYS[1], 'history')
end
redis.call('HDEL', KEYS[1], 'last_before', 'last_digest', 'last_response')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], redis.call('HGET', KEYS[1], 'owner') or '', 'PX', tonumber(ARGV[4]) + tonumber(ARGV[5]))
return {1, tonumber(ARGV[2])}
