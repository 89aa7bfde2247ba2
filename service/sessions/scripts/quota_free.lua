-- Redis Cluster: free a deleted session's slot in one quota set.
-- KEYS: a quota set. ARGV: session id.
return redis.call('ZREM', KEYS[1], ARGV[1])
