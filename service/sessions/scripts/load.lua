-- Load a session, refreshing the idle expiry of both its keys.
-- KEYS: hash, marker. ARGV: tombstone_ms.
-- Returns the hash as a flat list, or 1 (no such session) / {2, owner} (expired).
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then
  local owner = redis.call('GET', KEYS[2])
  if owner then return {2, owner} end
  return 1
end
local ttl = 0
for i = 1, #h, 2 do
  if h[i] == 'ttl_ms' then ttl = tonumber(h[i + 1]) end
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[1]))
end
return h
