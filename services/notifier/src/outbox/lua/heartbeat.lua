-- fwdwatch notifier: one instance says it is alive (see outbox/redis.rs).
--
-- KEYS[1] this instance's heartbeat key   KEYS[2] the set of instances
-- ARGV[1] instance id   ARGV[2] lease, milliseconds   ARGV[3] value (when it started)
-- Returns 1 when the instance was still registered (its outbox is its own), 0 when
-- it was not: new, or presumed dead and its outbox taken over meanwhile.

local was = redis.call('SISMEMBER', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return was
