-- Leave (ClusterStore::leave_member): remove the member (only if the given instance still
-- owns it, when one is given); when the room is empty drop its records everywhere.
-- KEYS: room:{room}:members, community:{community}:rooms, room:{room}
-- ARGV: participant id, room, owning instance or '', key prefix
-- Returns {'removed', record}, {'owned', owner} or {'absent'}.
local members, community_rooms, room_key = KEYS[1], KEYS[2], KEYS[3]
local pid, room, instance, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local record = redis.call('HGET', members, pid)
if not record then return {'absent'} end
local owner = cjson.decode(record)['signaling']
if instance ~= '' and owner ~= instance then return {'owned', owner} end
redis.call('HDEL', members, pid)
redis.call('SREM', prefix .. 'signaling:' .. owner .. ':members', pid .. '@' .. room)
if redis.call('HLEN', members) == 0 then
  redis.call('SREM', community_rooms, room)
  local node = redis.call('GET', room_key)
  if node then redis.call('SREM', prefix .. 'node:' .. node .. ':rooms', room) end
  redis.call('DEL', room_key)
end
return {'removed', record}
