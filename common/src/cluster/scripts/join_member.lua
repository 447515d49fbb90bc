-- Join (ClusterStore::join_member): one seat per user (the user's earlier members leave the
-- room and are returned), then refuse when the room is full (a member already recorded may
-- come back), else record the member, index the room and the member's instance.
-- KEYS: room:{room}:members, community:{community}:rooms, signaling:{instance}:members
-- ARGV: participant id, member record (JSON), room cap, room, members TTL (ms), user id,
--       key prefix
-- Returns {displaced member records, every member record}, or false when the room is full.
local members, community_rooms, instance_members = KEYS[1], KEYS[2], KEYS[3]
local pid, record, cap, room, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local user, prefix = ARGV[6], ARGV[7]
local displaced = {}
for _, other in ipairs(redis.call('HVALS', members)) do
  local ok, o = pcall(cjson.decode, other)
  if ok and o['userId'] == user and o['participantId'] ~= pid then
    redis.call('HDEL', members, o['participantId'])
    redis.call('SREM', prefix .. 'signaling:' .. o['signaling'] .. ':members',
      o['participantId'] .. '@' .. room)
    table.insert(displaced, other)
  end
end
if redis.call('HEXISTS', members, pid) == 0 and redis.call('HLEN', members) >= cap then
  return false
end
redis.call('HSET', members, pid, record)
redis.call('PEXPIRE', members, ttl)
redis.call('SADD', community_rooms, room)
redis.call('SADD', instance_members, pid .. '@' .. room)
return {displaced, redis.call('HVALS', members)}
