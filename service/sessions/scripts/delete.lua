-- Delete a session (only the owner's, when checked).
-- KEYS: hash, marker. ARGV: owner, check owner ("1"/"0"), key prefix, session id, free
--       ("1": remove the id from the quota sets here, a single Redis; "0": answer them, Redis
--       Cluster, whose sets live in other slots).
-- Returns 1 deleted (an expired session: its marker), 0 no such session (or, when checked,
-- another owner's); with free = "0", a deleted session that is held in quota sets answers
-- {1, model, owner, sets} ("m", "k" or "mk") so that the caller frees its slots.
local f = redis.call('HMGET', KEYS[1], 'model', 'owner', 'quota')
if not f[1] then
  local marker = redis.call('GET', KEYS[2])
  if marker and (ARGV[2] ~= '1' or marker == ARGV[1]) then
    redis.call('DEL', KEYS[2])
    return 1
  end
  return 0
end
local owner = f[2] or ''
if ARGV[2] == '1' and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[5] == '1' then
  redis.call('ZREM', ARGV[3] .. 'q:m:' .. f[1], ARGV[4])
  redis.call('ZREM', ARGV[3] .. 'q:k:' .. owner, ARGV[4])
elseif f[3] then
  return {1, f[1], owner, f[3]}
end
return 1
