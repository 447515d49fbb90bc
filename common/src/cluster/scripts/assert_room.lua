-- Periodic re-assertion of one room by one instance (ClusterStore::assert_room); recreates
-- everything after a Redis restart and drops records of its own that it no longer has:
-- room -> node unless the room already names one, the room in its node's and community's
-- sets, exactly ARGV[7..] as this instance's members.
-- KEYS: room:{room}:members, community:{community}:rooms, room:{room},
--       signaling:{instance}:members
-- ARGV: room, node, instance, TTL (ms), key prefix, node TTL (ms: a node's room set expires
--       with its hash), then participant id, record (JSON) pairs
-- Returns {the room's node, every member record}.
local members, community_rooms, room_key, instance_members = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local room, node, instance, ttl, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local node_ttl = ARGV[6]
local mine = {}
for i = 7, #ARGV, 2 do
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
local node_rooms = prefix .. 'node:' .. current .. ':rooms'
redis.call('SADD', node_rooms, room)
-- A set made here (after a Redis restart, or of a node that has died) gets the node's TTL.
if redis.call('PTTL', node_rooms) < 0 then
  redis.call('PEXPIRE', node_rooms, node_ttl)
end
return {current, redis.call('HVALS', members)}
