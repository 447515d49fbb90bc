-- Update a member's record (ClusterStore::update_member), only if the instance owns it.
-- KEYS: room:{room}:members
-- ARGV: participant id, member record (JSON), instance
-- Returns 1 if updated, 0 if the member is absent or owned by another instance.
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record or cjson.decode(record)['signaling'] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
