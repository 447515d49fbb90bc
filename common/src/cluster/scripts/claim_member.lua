-- Resume (ClusterStore::claim_member): hand the member to the instance if the secret and the
-- user match, and rotate the secret (records keep only its SHA-256).
-- KEYS: room:{room}:members
-- ARGV: participant id, hash of the presented resume secret, instance, room, key prefix,
--       user id of the resuming client, hash of the member's next resume secret
-- Returns {new record, every member record}; false when there is no such member; 0 when the
-- secret or the user does not match.
local members = KEYS[1]
local pid, hash, instance, room, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local user, next_hash = ARGV[6], ARGV[7]
local record = redis.call('HGET', members, pid)
if not record then return false end
local r = cjson.decode(record)
if r['resumeHash'] ~= hash or r['userId'] ~= user then return 0 end
r['resumeHash'] = next_hash
redis.call('SREM', prefix .. 'signaling:' .. r['signaling'] .. ':members', pid .. '@' .. room)
r['signaling'] = instance
local claimed = cjson.encode(r)
redis.call('HSET', members, pid, claimed)
redis.call('SADD', prefix .. 'signaling:' .. instance .. ':members', pid .. '@' .. room)
return {claimed, redis.call('HVALS', members)}
