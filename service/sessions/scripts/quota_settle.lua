-- Redis Cluster: end a create's reservation in one quota set.
-- KEYS: a quota set, its pending set. ARGV: session id, reservation score, "1" to give the
-- reservation back (if still unchanged) or "0" to keep it (the session was created).
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '1' then
  local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if seen and tonumber(seen) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
end
return 1
