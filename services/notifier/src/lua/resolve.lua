-- fwdwatch notifier: a tenant's scan ended; resolve the open detections it would
-- have seen and did not. Mirrors lifecycle::StoreTracker::resolve.
--
-- KEYS[1] open set (tenant)  KEYS[2] reminders_due  KEYS[3] outbox  KEYS[4] outbox_due
-- ARGV[1] detection key prefix  [2] scan started_at (fixed-width RFC 3339)
-- [3] now (same format)  [4] outbox due, Unix seconds  [5] state TTL, seconds
-- [6] covered signals, space-separated  [7] mailboxes not read (lower case),
-- newline-separated  [8..] fingerprints the scan found
-- Returns the outbox entries (JSON) of the resolved detections.

local covered = {}
for s in string.gmatch(ARGV[6], '%S+') do covered[s] = true end
local not_read = {}
for m in string.gmatch(ARGV[7], '[^\n]+') do not_read[m] = true end
local present = {}
for i = 8, #ARGV do present[ARGV[i]] = true end

local out = {}
for _, fp in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not present[fp] then
    local det = ARGV[1] .. fp
    local h = redis.call('HMGET', det, 'state', 'signal', 'last_seen', 'episode',
      'campaign_keys', 'detection', 'first_seen', 'tenant_id', 'mailbox')
    if h[1] ~= 'open' then
      -- Approved, or its state aged out: not open any more.
      redis.call('SREM', KEYS[1], fp)
      redis.call('ZREM', KEYS[2], fp)
    elseif h[2] and covered[h[2]] and h[3] and h[3] < ARGV[2]
        and not (h[9] and not_read[string.lower(h[9])]) then
      local ep = tonumber(h[4]) or 1
      local id = 'resolved:' .. fp .. ':' .. ep
      local t = {alert_id = id, kind = 'resolved', tenant_id = h[8] or '', fingerprint = fp,
                 episode = ep, reminder = 0, created_at = ARGV[3]}
      if h[7] then t.first_seen = h[7] end
      local entry = cjson.encode(t)
      if h[6] then entry = string.sub(entry, 1, -2) .. ',"detection":' .. h[6] .. '}' end
      redis.call('HSET', KEYS[3], id, entry)
      redis.call('ZADD', KEYS[4], ARGV[4], id)
      redis.call('HSET', det, 'state', 'resolved', 'resolved_at', ARGV[3], 'resolved_scan', ARGV[2])
      redis.call('EXPIRE', det, ARGV[5])
      redis.call('SREM', KEYS[1], fp)
      redis.call('ZREM', KEYS[2], fp)
      if h[5] then
        for ck in string.gmatch(h[5], '[^\n]+') do redis.call('SREM', ck, fp) end
      end
      out[#out + 1] = entry
    end
  end
end
return out
