-- fwdwatch notifier: one sighting of one detection, decided and recorded atomically.
-- Mirrors lifecycle::StoreTracker::observe_locked; both run the same test suite.
--
-- KEYS[1] detection hash   KEYS[2] open set (tenant)   KEYS[3] reminders_due zset
-- KEYS[4] outbox hash      KEYS[5] outbox_due zset     KEYS[6] campaigns_due zset
-- then, per target i (0-based): KEYS[7+3i] allowlist key, KEYS[8+3i] campaign set,
-- KEYS[9+3i] campaign_alerted flag.
-- ARGV[1] fingerprint  [2] tenant  [3] mailbox ('' tenant-wide)  [4] signal
-- [5] detection JSON   [6] observed_at (fixed-width RFC 3339)  [7] now (same format)
-- [8] now, Unix seconds  [9] remind_before (now - interval, fixed format)
-- [10] reminder interval, seconds  [11] state TTL, seconds
-- [12] outbox due, Unix seconds  [13] campaign due, Unix seconds
-- [14] campaign_min_tenants  [15] campaign_min_mailboxes  [16] detection key prefix
-- [17] call token (a retried call returns the first attempt's answer)
-- [18] campaign flag TTL, seconds  [19] detection enabled ('1' / '0')
-- [20..] the targets, in KEYS order
-- Returns {status, outbox entry JSON or ''}; status: alert | silent | suppressed | stale.

local det = KEYS[1]
local fp, tenant, mailbox, signal, json = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local obs, now = ARGV[6], ARGV[7]
local now_epoch = tonumber(ARGV[8])
local ttl = tonumber(ARGV[11])
local token = ARGV[17]
local enabled = ARGV[19]
local ntargets = #ARGV - 19

local h = redis.call('HMGET', det, 'state', 'last_seen', 'last_alert_at', 'episode',
  'reminders', 'resolved_scan', 'campaign_keys', 'first_seen', 'op_token', 'op_status', 'op_alert',
  'removed_at')
local state, last_seen, last_alert, episode = h[1], h[2], h[3], h[4]
local reminders, resolved_scan, campaign_keys, first_seen = h[5], h[6], h[7], h[8]

-- A retry of a call whose answer was lost: answer the same again.
if h[9] == token then
  if h[10] == 'alert' then
    local entry = redis.call('HGET', KEYS[4], h[11])
    if entry then return {'alert', entry} end
    return {'silent', ''}
  end
  return {h[10], ''}
end

local function finish(status, alert_id)
  redis.call('HSET', det, 'op_token', token, 'op_status', status, 'op_alert', alert_id or '')
  redis.call('EXPIRE', det, ttl)
end

-- RFC 3339 → Unix seconds (nil when unparsable), for an approval's expires_at.
local function epoch(ts)
  local y, mo, d, hh, mi, ss, rest =
    string.match(ts, '^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return nil end
  local frac = 0
  local f, tz = string.match(rest, '^%.(%d+)(.*)$')
  if f then frac = tonumber('0.' .. f); rest = tz end
  local offset = 0
  if rest ~= 'Z' and rest ~= 'z' then
    local sign, oh, om = string.match(rest, '^([+-])(%d%d):(%d%d)$')
    if not sign then return nil end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == '-' and -1 or 1)
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(hh) * 3600 + tonumber(mi) * 60 + tonumber(ss) + frac - offset
end

-- store::allowlist::is_approved, in Lua: the entry must describe exactly this
-- forward and not have expired; an entry that does not decode approves nothing.
local function approved(i)
  local raw = redis.call('GET', KEYS[7 + 3 * i])
  if not raw then return false end
  local ok, a = pcall(cjson.decode, raw)
  if not ok or type(a) ~= 'table' then return false end
  local amb = a.mailbox
  if type(amb) ~= 'string' then amb = '' end
  if a.tenant_id ~= tenant or amb ~= mailbox or a.signal ~= signal or a.target ~= ARGV[20 + i] then
    return false
  end
  local exp = a.expires_at
  if type(exp) == 'string' then
    local e = epoch(exp)
    if e == nil or e <= now_epoch then return false end
  end
  return true
end

local function close_open()
  redis.call('SREM', KEYS[2], fp)
  redis.call('ZREM', KEYS[3], fp)
  if campaign_keys then
    for ck in string.gmatch(campaign_keys, '[^\n]+') do redis.call('SREM', ck, fp) end
  end
end

local function outbox(id, kind, ep, n, first)
  local t = {alert_id = id, kind = kind, tenant_id = tenant, fingerprint = fp,
             episode = ep, reminder = n, created_at = now}
  if first then t.first_seen = first end
  local entry = cjson.encode(t)
  entry = string.sub(entry, 1, -2) .. ',"detection":' .. json .. '}'
  redis.call('HSET', KEYS[4], id, entry)
  redis.call('ZADD', KEYS[5], ARGV[12], id)
  return entry
end

if state == 'resolved' and resolved_scan and obs < resolved_scan then
  finish('stale')
  return {'stale', ''}
end
local current = (not last_seen) or obs >= last_seen

local all_approved = ntargets > 0
for i = 0, ntargets - 1 do
  if not approved(i) then all_approved = false; break end
end
if all_approved then
  if state == 'open' then close_open() end
  if current then
    redis.call('HSET', det, 'detection', json, 'last_seen', obs, 'tenant_id', tenant,
      'mailbox', mailbox, 'signal', signal)
  end
  redis.call('HSET', det, 'state', 'approved')
  finish('suppressed')
  return {'suppressed', ''}
end

-- Removed by fwdwatch: quiet while it stays disabled, or when the sighting comes
-- from a scan that started before the removal.
if state == 'removed' then
  local removed_at = h[12]
  if (removed_at and obs < removed_at) or enabled ~= '1' then
    if current then redis.call('HSET', det, 'detection', json, 'last_seen', obs) end
    finish('silent')
    return {'silent', ''}
  end
end

if state == 'open' then
  local due = current and last_alert and last_alert <= ARGV[9]
  if current then
    for i = 0, ntargets - 1 do redis.call('EXPIRE', KEYS[8 + 3 * i], ttl) end
    if not due then
      -- The common case (a later scan of a known forward): one write.
      redis.call('HSET', det, 'detection', json, 'last_seen', obs,
        'op_token', token, 'op_status', 'silent', 'op_alert', '')
      redis.call('EXPIRE', det, ttl)
      return {'silent', ''}
    end
    redis.call('HSET', det, 'detection', json, 'last_seen', obs)
  end
  if due then
    local ep = tonumber(episode) or 1
    local n = (tonumber(reminders) or 0) + 1
    local id = 'reminder:' .. fp .. ':' .. ep .. ':' .. n
    local entry = outbox(id, 'reminder', ep, n, first_seen)
    redis.call('HSET', det, 'last_alert_at', now, 'reminders', n)
    redis.call('ZADD', KEYS[3], now_epoch + tonumber(ARGV[10]), fp)
    finish('alert', id)
    return {'alert', entry}
  end
  finish('silent')
  return {'silent', ''}
end

-- Never seen, approved before, resolved, or removed and forwarding again: a new
-- episode.
local ep = (tonumber(episode) or 0) + 1
local kind = 'new'
if state == 'removed' then kind = 'reappeared' end
local id = kind .. ':' .. fp .. ':' .. ep
local entry = outbox(id, kind, ep, 0, obs)
local cks = {}
for i = 0, ntargets - 1 do cks[#cks + 1] = KEYS[8 + 3 * i] end
redis.call('HDEL', det, 'resolved_at', 'resolved_scan')
redis.call('HSET', det, 'state', 'open', 'detection', json, 'first_seen', obs, 'last_seen', obs,
  'last_alert_at', now, 'tenant_id', tenant, 'mailbox', mailbox, 'signal', signal,
  'episode', ep, 'reminders', 0, 'campaign_keys', table.concat(cks, '\n'))
redis.call('SADD', KEYS[2], fp)
redis.call('ZADD', KEYS[3], now_epoch + tonumber(ARGV[10]), fp)

-- Campaigns: count the open victims of each target this detection newly joins.
local min_tenants, min_mailboxes = tonumber(ARGV[14]), tonumber(ARGV[15])
for i = 0, ntargets - 1 do
  local ckey, flag = KEYS[8 + 3 * i], KEYS[9 + 3 * i]
  local added = redis.call('SADD', ckey, fp)
  redis.call('EXPIRE', ckey, ttl)
  if added == 1 and redis.call('EXISTS', flag) == 0 then
    local tenants, ntenants, maxm = {}, 0, 0
    for _, m in ipairs(redis.call('SMEMBERS', ckey)) do
      local v = redis.call('HMGET', ARGV[16] .. m, 'state', 'tenant_id', 'mailbox')
      if v[1] == 'open' then
        local t, mb = v[2] or '', v[3] or ''
        local boxes = tenants[t]
        if not boxes then
          boxes = {n = 0, seen = {}}
          tenants[t] = boxes
          ntenants = ntenants + 1
        end
        if not boxes.seen[mb] then
          boxes.seen[mb] = true
          boxes.n = boxes.n + 1
          if boxes.n > maxm then maxm = boxes.n end
        end
      end
    end
    if ntenants >= min_tenants or maxm >= min_mailboxes then
      redis.call('SET', flag, 'pending', 'EX', ARGV[18])
      redis.call('ZADD', KEYS[6], ARGV[13], ARGV[20 + i])
    end
  end
end

finish('alert', id)
return {'alert', entry}
