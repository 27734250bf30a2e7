-- One KV owner's entries, kept atomically with their bookkeeping. Every key
-- shares the owner's hash tag, so the script runs on one node of a cluster.
--
-- KEYS: 1 the entry (put, incr, delete), 2 the index (sorted set of members,
--       `scope/key`, for listing by prefix), 3 expiry (sorted set: member ->
--       expiry in host-clock milliseconds), 4 usage (hash: `#keys` and
--       `#bytes` of the owner, `#keys:SCOPE` and `#bytes:SCOPE` of each
--       user's scope, and each member's bytes counted against the quota;
--       members start with a scope, never with `#`)
-- ARGV: 1 operation, 2 prefix of entry keys, 3 member, 4 now (host clock),
--       then the operation's own arguments.
--
-- Writes answer a tagged array: {'stored', 1 | 0}, {'counter', text},
-- {'not-integer', the value}, or {'over-quota', 'keys' | 'bytes' |
-- 'user-keys' | 'user-bytes', total}.
local op, prefix, member, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local entry, index, expiry, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- Whether a member has not expired by the host clock.
local function live(m)
  local at = redis.call('ZSCORE', expiry, m)
  return not (at and tonumber(at) <= now)
end

-- The user's scope a member is in (`user/ID`; user ids hold no `/`), or nil.
local function user_scope(m)
  return string.match(m, '^(user/[^/]*)/')
end

-- Removes a member and its bookkeeping; 1 if it was counted, else 0.
local function forget(m)
  local size = redis.call('HGET', usage, m)
  redis.call('DEL', prefix .. m)
  redis.call('ZREM', index, m)
  redis.call('ZREM', expiry, m)
  if not size then return 0 end
  redis.call('HDEL', usage, m)
  redis.call('HINCRBY', usage, '#keys', -1)
  redis.call('HINCRBY', usage, '#bytes', -tonumber(size))
  local scope = user_scope(m)
  if scope then
    if redis.call('HINCRBY', usage, '#keys:' .. scope, -1) <= 0 then
      redis.call('HDEL', usage, '#keys:' .. scope, '#bytes:' .. scope)
    else
      redis.call('HINCRBY', usage, '#bytes:' .. scope, -tonumber(size))
    end
  end
  return 1
end

local function reclaim()
  local n = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    n = n + forget(m)
  end
  return n
end

local scope = user_scope(member)

-- The owner's keys and bytes if `member` held `size` bytes, whether
-- `member` is new, and its user scope's keys and bytes (0 without one).
local function totals(size)
  local held = redis.call('HMGET', usage, '#keys', '#bytes', member,
    '#keys:' .. (scope or ''), '#bytes:' .. (scope or ''))
  local keys, bytes = tonumber(held[1] or '0'), tonumber(held[2] or '0') + size
  local user_keys, user_bytes = tonumber(held[4] or '0'), tonumber(held[5] or '0') + size
  if held[3] then
    bytes = bytes - tonumber(held[3])
    user_bytes = user_bytes - tonumber(held[3])
  else
    keys = keys + 1
    user_keys = user_keys + 1
  end
  return {keys, bytes, not held[3], user_keys, user_bytes}
end

-- Which quota `after` breaks, as the reply that says so, or nil.
local function broken(after, quota)
  if after[1] > quota[1] then return {'over-quota', 'keys', after[1]} end
  if after[2] > quota[2] then return {'over-quota', 'bytes', after[2]} end
  if scope and after[4] > quota[3] then return {'over-quota', 'user-keys', after[4]} end
  if scope and after[5] > quota[4] then return {'over-quota', 'user-bytes', after[5]} end
  return nil
end

-- The totals after the write if they are within `quota` (keys, bytes,
-- keys per user, bytes per user), reclaiming expired entries first if
-- they would not be; else nil and the reply that says which it breaks.
local function admit(size, quota)
  local after = totals(size)
  if broken(after, quota) then
    reclaim()
    after = totals(size)
  end
  local why = broken(after, quota)
  if why then return nil, why end
  return after
end

-- Counts `member` as holding `size` bytes with `after` the totals,
-- expiring at `at` ('' for never).
local function record(after, size, at)
  redis.call('HSET', usage, '#keys', string.format('%d', after[1]),
    '#bytes', string.format('%d', after[2]), member, size)
  if scope then
    redis.call('HSET', usage, '#keys:' .. scope, string.format('%d', after[4]),
      '#bytes:' .. scope, string.format('%d', after[5]))
  end
  if after[3] then redis.call('ZADD', index, 0, member) end
  if at == '' then redis.call('ZREM', expiry, member) else redis.call('ZADD', expiry, at, member) end
end

if op == 'put' then
  -- ARGV: 5 value, 6 bytes, 7 expires at ('' to keep a live key's expiry,
  --       else never), 8 ttl ms (likewise), 9 quota keys, 10 quota bytes,
  --       11 'always' | 'absent' | 'equals', 12 expected,
  --       13 quota keys per user, 14 quota bytes per user
  local mode, is_live = ARGV[11], live(member)
  if mode ~= 'always' then
    local current = false
    if is_live then current = redis.call('GET', entry) end
    if mode == 'absent' and current then return {'stored', 0} end
    if mode == 'equals' and current ~= ARGV[12] then return {'stored', 0} end
  end
  local at, ttl = ARGV[7], ARGV[8]
  if at == '' and is_live then
    -- The live key's expiry stays, by the host clock.
    local kept = redis.call('ZSCORE', expiry, member)
    if kept then at, ttl = kept, tostring(math.max(tonumber(kept) - now, 1)) end
  end
  local size = tonumber(ARGV[6])
  local after, why = admit(size,
    {tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[13]), tonumber(ARGV[14])})
  if not after then return why end
  if ttl == '' then
    redis.call('SET', entry, ARGV[5])
  else
    redis.call('SET', entry, ARGV[5], 'PX', ttl)
  end
  record(after, size, at)
  return {'stored', 1}
elseif op == 'incr' then
  -- ARGV: 5 delta, 6 key length, 7 quota keys, 8 quota bytes,
  --       9 quota keys per user, 10 quota bytes per user
  if not live(member) then forget(member) end
  local before = redis.call('GET', entry)
  local ttl = redis.call('PTTL', entry)
  if not pcall(redis.call, 'INCRBY', entry, ARGV[5]) then
    return {'not-integer', before or ''}
  end
  local text = redis.call('GET', entry)
  local size = tonumber(ARGV[6]) + #text
  local after, why = admit(size,
    {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])})
  if not after then
    if not before then
      redis.call('DEL', entry)
    elseif ttl > 0 then
      redis.call('SET', entry, before, 'PX', ttl)
    else
      redis.call('SET', entry, before)
    end
    return why
  end
  record(after, size, redis.call('ZSCORE', expiry, member) or '')
  -- The counter as text: a Lua number would round it past 2^53.
  return {'counter', text}
elseif op == 'delete' then
  forget(member)
  return 1
elseif op == 'sweep' then
  return reclaim()
elseif op == 'forget-scope' then
  -- Every member that starts with `member` (a scope and `/`), expired or
  -- not; answers how many.
  local members = redis.call('ZRANGEBYLEX', index, '[' .. member, '(' .. member .. '\127')
  for _, m in ipairs(members) do forget(m) end
  return #members
elseif op == 'list' then
  -- ARGV: 5 lowest member (ZRANGEBYLEX syntax), 6 highest, 7 page size
  local found, low, limit = {}, ARGV[5], tonumber(ARGV[7])
  while #found < limit do
    local page = redis.call('ZRANGEBYLEX', index, low, ARGV[6], 'LIMIT', 0, limit)
    if #page == 0 then break end
    for _, m in ipairs(page) do
      if #found < limit and live(m) then found[#found + 1] = m end
    end
    low = '(' .. page[#page]
  end
  return found
end
return redis.error_reply('unknown operation ' .. tostring(op))
