-- fwdwatch notifier: record delivery progress of one outbox entry, only while this
-- instance still owns it (an instance presumed dead must not write over the new
-- owner's progress, nor give itself the entry back).
--
-- KEYS[1] the outbox hash   KEYS[2] this instance's owned index
-- ARGV[1] alert id   ARGV[2] entry JSON   ARGV[3] retry at (Unix seconds) or ''
-- Returns 1 saved, 0 not the owner any more, -1 the entry is gone (delivered).

if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
