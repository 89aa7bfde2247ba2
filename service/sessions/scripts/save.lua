-- Save a step: a check-and-set on the position, recognising a re-sent save by its token.
-- KEYS: hash, marker. ARGV: expected, position, state, ttl_ms, tombstone_ms, token, history,
--       created_at, token window (entries), now (the writer's clock, ms since the epoch).
-- Returns {1, position} written (or written before by this very save), {0, stored, record}
-- conflict (the fields load.lua answers, as a flat field/value list: the caller plans the step
-- again from it, no load needed), {-1} not found, {-2} expired. A write is three commands:
-- HMGET, HSET, PEXPIRE; the expiry marker is set again (SET) only when it would otherwise
-- outlive the hash by less than half the tombstone time (`marked_until` in the hash: when it
-- expires), i.e. about once per tombstone_ms / 2 of a session's life, so an expired session is
-- told apart from a deleted one for between half and all of the tombstone time.
--
-- Write tokens: each entry "<32 hex>=<20-digit position>;" (54 bytes). The newest writes are
-- appended to `tokens_new` (fewer than FOLD entries); every FOLD-th write folds them into
-- `tokens`, which keeps the last `window` entries, so the tokens of at least the last `window`
-- writes are always recorded. Why two fields: Redis hashes every byte of each string a script
-- creates or reads, so appending to a string of a few entries (and rewriting the 1.7 KB ring
-- once per FOLD writes, one HGET more) costs several times less CPU than rewriting the ring on
-- every write. A save that finds the stored position and creation time it expects and moves
-- the position on cannot have been applied before (applied, it would have moved the position
-- past the one it expects, and positions only grow), so only the other saves look for their
-- token, in both fields.
local FOLD = 8
local f = redis.call('HMGET', KEYS[1], 'position', 'tokens_new', 'created_at', 'owner', 'marked_until')
if not f[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {-2} end
  return {-1}
end
local fresh = f[2] or ''
local expected, position = tonumber(ARGV[1]), tonumber(ARGV[2])
local current = tonumber(f[1]) == expected and f[3] == ARGV[8]
if not current or position == expected then
  local key = ARGV[6] .. '='
  local tokens = fresh
  local at = string.find(tokens, key, 1, true)
  if not at then
    tokens = redis.call('HGET', KEYS[1], 'tokens') or ''
    at = string.find(tokens, key, 1, true)
  end
  if at then
    -- Applied already (its reply was lost). The expiry refresh is a propagated write, so that a
    -- WAIT after this re-send (Redis Cluster with wait_replicas) also covers the original write.
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return {1, tonumber(string.sub(tokens, at + 33, at + 52))}
  end
  if not current then
    -- the fields load.lua answers (the same list: not the write tokens), in HGETALL's form
    local names = {
      'model', 'version', 'fingerprint', 'position', 'ttl_ms', 'created_at', 'shape', 'state', 'history',
      'owner', 'start', 'last_before', 'last_digest', 'last_response',
    }
    local v = redis.call('HMGET', KEYS[1], unpack(names))
    local h = {}
    for i = 1, #names do
      if v[i] then
        h[#h + 1] = names[i]
        h[#h + 1] = v[i]
      end
    end
    return {0, tonumber(f[1]), h}
  end
end
local entry = ARGV[6] .. '=' .. string.format('%020d', position) .. ';'
-- history is always written ('' when none): no HDEL, and a record of an older release that
-- still carries last_before/last_digest/last_response is read from `history` from now on
local fields = {'position', ARGV[2], 'state', ARGV[3], 'ttl_ms', ARGV[4], 'history', ARGV[7], 'tokens_new', ''}
if #fresh < 54 * (FOLD - 1) then
  fields[10] = fresh .. entry
else
  local tokens = redis.call('HGET', KEYS[1], 'tokens') or ''
  fields[11], fields[12] = 'tokens', string.sub(tokens .. fresh .. entry, -54 * tonumber(ARGV[9]))
end
local now, ttl, tomb = tonumber(ARGV[10]), tonumber(ARGV[4]), tonumber(ARGV[5])
if tonumber(f[5] or 0) < now + ttl + tomb / 2 then
  redis.call('SET', KEYS[2], f[4] or '', 'PX', ttl + tomb)
  fields[#fields + 1] = 'marked_until'
  fields[#fields + 1] = string.format('%d', now + ttl + tomb)
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, position}
