-- Resume (ClusterStore::claim_member): hand the member to the instance if the secret matches.
-- KEYS: room:{room}:members
-- ARGV: participant id, resume secret, instance, room, key prefix
-- Returns {new record, every member record}, or false.
local members = KEYS[1]
local pid, secret, instance, room, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local record = redis.call('HGET', members, pid)
if not record then return false end
local r = cjson.decode(record)
if r['resumeSecret'] ~= secret then return false end
redis.call('SREM', prefix .. 'signaling:' .. r['signaling'] .. ':members', pid .. '@' .. room)
r['signaling'] = instance
local claimed = cjson.encode(r)
redis.call('HSET', members, pid, claimed)
redis.call('SADD', prefix .. 'signaling:' .. instance .. ':members', pid .. '@' .. room)
return {claimed, redis.call('HVALS', members)}
