-- Place a room (ClusterStore::place_room), atomically even with several signaling nodes
-- racing for it: return the room's live node, or pick the live, not draining node with
-- participants < capacity and the most load headroom (load_capacity - load, in forwarded
-- packets per second; a node with none left is full; ties: lowest id), record the room and
-- reserve a new room's cost on `load` and one participant on that node. A room that moves
-- off a dead node leaves that node's room set. Rules in docs/cluster.md, "Placement".
-- KEYS: room:{room}, nodes
-- ARGV: now (ms), stale after (ms), room record TTL (ms), key prefix, room,
--       new room reservation (fpps), node TTL (ms: a node's room set expires with its hash)
-- Returns the node id, or false when no node qualifies.
local now, stale, ttl, prefix, room = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local reservation, node_ttl = ARGV[6], ARGV[7]
-- Live: a heartbeat at most `stale` ms old, and no dropped link since it (`down_hb`, written
-- by node_down.lua, names the heartbeat the node died after).
local function live(hb, down_hb)
  return hb and hb ~= down_hb and (now - tonumber(hb)) <= stale
end
local function alive(id)
  local f = redis.call('HMGET', prefix .. 'node:' .. id, 'hb', 'down_hb')
  return live(f[1], f[2])
end
local existing = redis.call('GET', KEYS[1])
if existing and alive(existing) then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return existing
end
local ids = redis.call('SMEMBERS', KEYS[2])
table.sort(ids)
local best, best_headroom = nil, nil
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', prefix .. 'node:' .. id,
    'hb', 'participants', 'capacity', 'draining', 'load', 'load_capacity', 'down_hb')
  if live(f[1], f[7]) and f[4] ~= '1' then
    local p, c = tonumber(f[2] or '0'), tonumber(f[3] or '0')
    local headroom = tonumber(f[6] or '0') - tonumber(f[5] or '0')
    if p < c and headroom > 0 then
      -- Strictly more: on a tie the earlier (lower) id stays.
      if best_headroom == nil or headroom > best_headroom then
        best, best_headroom = id, headroom
      end
    end
  end
end
if not best then
  return false
end
redis.call('SET', KEYS[1], best, 'PX', ttl)
redis.call('HINCRBY', prefix .. 'node:' .. best, 'load', reservation)
redis.call('HINCRBY', prefix .. 'node:' .. best, 'participants', 1)
local rooms = prefix .. 'node:' .. best .. ':rooms'
redis.call('SADD', rooms, room)
-- A new set gets the node's TTL (its heartbeats keep it while it lives).
if redis.call('PTTL', rooms) < 0 then
  redis.call('PEXPIRE', rooms, node_ttl)
end
if existing and existing ~= best then
  -- The room moved off a dead node: that node no longer holds it.
  redis.call('SREM', prefix .. 'node:' .. existing .. ':rooms', room)
end
return best
