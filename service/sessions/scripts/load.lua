-- Load a session, refreshing the idle expiry of both its keys.
-- KEYS: hash, marker. ARGV: tombstone_ms.
-- Returns the fields a step reads as a flat field/value list (HGETALL's form, fields the hash
-- lacks left out), or 1 (no such session) / {2, owner} (expired). The write tokens are not
-- among them (only the save script reads them): Redis hashes every byte of each string a
-- script reads, and the token ring is the largest field after the state. save.lua answers a
-- conflict with the same fields (its own copy of the list).
local FIELDS = {
  'model', 'version', 'fingerprint', 'position', 'ttl_ms', 'created_at', 'shape', 'state', 'history',
  'owner', 'start', 'last_before', 'last_digest', 'last_response',
}
local v = redis.call('HMGET', KEYS[1], unpack(FIELDS))
if not v[1] and not v[4] then
  local owner = redis.call('GET', KEYS[2])
  if owner then return {2, owner} end
  return 1
end
local h = {}
for i = 1, #FIELDS do
  if v[i] then
    h[#h + 1] = FIELDS[i]
    h[#h + 1] = v[i]
  end
end
local ttl = tonumber(v[5]) or 0
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[1]))
end
return h
