-- Place a room (ClusterStore::place_room), atomically even with several signaling nodes
-- racing for it: return the room's live node, or pick the live, not draining, not full node
-- with the lowest participants/capacity (ties: lowest id), record the room and reserve one
-- participant on that node. Rules in docs/cluster.md, "Placement".
-- KEYS: room:{room}, nodes
-- ARGV: now (ms), stale after (ms), room record TTL (ms), key prefix, room
-- Returns the node id, or false when no node qualifies.
local now, stale, ttl, prefix, room = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local function alive(id)
  local hb = redis.call('HGET', prefix .. 'node:' .. id, 'hb')
  return hb and (now - tonumber(hb)) <= stale
end
local existing = redis.call('GET', KEYS[1])
if existing and alive(existing) then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return existing
end
local ids = redis.call('SMEMBERS', KEYS[2])
table.sort(ids)
local best, best_load = nil, nil
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', prefix .. 'node:' .. id, 'hb', 'participants', 'capacity', 'draining')
  if f[1] and (now - tonumber(f[1])) <= stale and f[4] ~= '1' then
    local p, c = tonumber(f[2] or '0'), tonumber(f[3] or '0')
    if c > 0 and p < c then
      local load = p / c
      if best_load == nil or load < best_load then
        best, best_load = id, load
      end
    end
  end
end
if not best then
  return false
end
redis.call('SET', KEYS[1], best, 'PX', ttl)
redis.call('HINCRBY', prefix .. 'node:' .. best, 'participants', 1)
redis.call('SADD', prefix .. 'node:' .. best .. ':rooms', room)
return best
