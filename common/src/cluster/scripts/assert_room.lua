-- Periodic re-assertion of one room by one instance (ClusterStore::assert_room); recreates
-- everything after a Redis restart and drops records of its own that it no longer has:
-- room -> node unless the room already names one, the room in its community's set, exactly
-- ARGV[5..] as this instance's members. The room's node's room set is written by the caller
-- from the node returned (ClusterStore::assert_rooms), so every key here is declared.
-- KEYS: room:{room}:members, community:{community}:rooms, room:{room},
--       signaling:{instance}:members
-- ARGV: room, node, instance, TTL (ms), then participant id, record (JSON) pairs
-- Returns {the room's node, every member record}.
local members, community_rooms, room_key, instance_members = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local room, node, instance, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mine = {}
for i = 5, #ARGV, 2 do
  mine[ARGV[i]] = true
  local existing = redis.call('HGET', members, ARGV[i])
  -- A member resumed on another instance is theirs now.
  if not existing or cjson.decode(existing)['signaling'] == instance then
    redis.call('HSET', members, ARGV[i], ARGV[i + 1])
    redis.call('SADD', instance_members, ARGV[i] .. '@' .. room)
  end
end
local all = redis.call('HGETALL', members)
for i = 1, #all, 2 do
  if not mine[all[i]] and cjson.decode(all[i + 1])['signaling'] == instance then
    redis.call('HDEL', members, all[i])
    redis.call('SREM', instance_members, all[i] .. '@' .. room)
  end
end
if redis.call('HLEN', members) > 0 then
  redis.call('PEXPIRE', members, ttl)
  redis.call('SADD', community_rooms, room)
end
local current = redis.call('GET', room_key)
if not current then
  redis.call('SET', room_key, node, 'PX', ttl)
  current = node
elseif current == node then
  redis.call('PEXPIRE', room_key, ttl)
end
return {current, redis.call('HVALS', members)}
