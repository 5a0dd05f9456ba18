-- fwdwatch notifier: the safety net. An outbox entry that no instance's index lists
-- (written by hand, or by a generic-store notifier that died between its two
-- writes) is adopted by this instance once it is older than the cutoff. Cheap when
-- nothing is amiss: the entries are only walked when the counts disagree.
--
-- KEYS[1] the outbox hash   KEYS[2] the set of instances   KEYS[3] this instance's
-- owned index   KEYS[4] the legacy due index
-- ARGV[1] owned index key prefix   ARGV[2] cutoff (created_at, RFC 3339)
-- ARGV[3] now, Unix seconds
-- Returns how many entries were adopted.

local indexes = {KEYS[3], KEYS[4]}
for _, inst in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[1] .. inst
  if key ~= KEYS[3] then indexes[#indexes + 1] = key end
end
local listed = 0
for _, key in ipairs(indexes) do listed = listed + redis.call('ZCARD', key) end
if redis.call('HLEN', KEYS[1]) == listed then return 0 end

local adopted = 0
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  local owned = false
  for _, key in ipairs(indexes) do
    if redis.call('ZSCORE', key, id) then owned = true; break end
  end
  if not owned then
    local ok, entry = pcall(cjson.decode, redis.call('HGET', KEYS[1], id))
    local created = ok and type(entry) == 'table' and entry.created_at
    if type(created) ~= 'string' or created < ARGV[2] then
      redis.call('ZADD', KEYS[3], ARGV[3], id)
      adopted = adopted + 1
    end
  end
end
return adopted
