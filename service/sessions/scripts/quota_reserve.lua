-- Redis Cluster: reserve a slot in one quota set for a create (redis_cluster.py, step 1).
-- KEYS: a quota set, its pending set (same slot). ARGV: session id, limit, ttl_ms, due batch,
-- pending_ms.
-- Returns {1, score}: reserved until score (ms, server time), and marked pending for
-- pending_ms (the create may still give it back); {2}: a member already (its score pushed out
-- to now + ttl); {0, member, score, ...}: full, with the members whose score has passed to
-- check; {0}: full of live sessions; {3}: full, but with reservations that may be given back.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = now + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'GT', score, ARGV[1])
  return {2}
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], score, ARGV[1])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
  return {1, score}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
if #due == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) > 0 then return {3} end
end
table.insert(due, 1, 0)
return due
