-- fwdwatch notifier: move the outbox of every instance whose heartbeat is gone into
-- this instance's own, atomically, so an entry always has exactly one owner.
--
-- KEYS[1] the set of instances   KEYS[2] this instance's owned index
-- KEYS[3] the legacy due index (notifiers from before owned outboxes)
-- ARGV[1] this instance's id   ARGV[2] heartbeat key prefix   ARGV[3] owned index
-- key prefix   ARGV[4] now, Unix seconds (the score: retry at once)
-- Returns, per instance taken over: its id, how many entries, then their ids
-- ({instance, n, id1..idn, instance, n, ...}); the legacy index as 'legacy'.

local out = {}
for _, inst in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if inst ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. inst) == 0 then
    local src = ARGV[3] .. inst
    local ids = redis.call('ZRANGE', src, 0, -1)
    for _, id in ipairs(ids) do
      redis.call('ZADD', KEYS[2], ARGV[4], id)
    end
    redis.call('DEL', src)
    redis.call('SREM', KEYS[1], inst)
    out[#out + 1] = inst
    out[#out + 1] = #ids
    for _, id in ipairs(ids) do out[#out + 1] = id end
  end
end

-- What an older notifier left with a lease that has run out.
local legacy = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4], 'LIMIT', 0, 1000)
if #legacy > 0 then
  for _, id in ipairs(legacy) do
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    redis.call('ZREM', KEYS[3], id)
  end
  out[#out + 1] = 'legacy'
  out[#out + 1] = #legacy
  for _, id in ipairs(legacy) do out[#out + 1] = id end
end
return out
