-- Join (ClusterStore::join_member): refuse when the room is full (a member already recorded
-- may come back), else record the member, index the room and the member's instance.
-- KEYS: room:{room}:members, community:{community}:rooms, signaling:{instance}:members
-- ARGV: participant id, member record (JSON), room cap, room, members TTL (ms)
-- Returns every member record, or false when the room is full.
local members, community_rooms, instance_members = KEYS[1], KEYS[2], KEYS[3]
local pid, record, cap, room, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
if redis.call('HEXISTS', members, pid) == 0 and redis.call('HLEN', members) >= cap then
  return false
end
redis.call('HSET', members, pid, record)
redis.call('PEXPIRE', members, ttl)
redis.call('SADD', community_rooms, room)
redis.call('SADD', instance_members, pid .. '@' .. room)
return redis.call('HVALS', members)
