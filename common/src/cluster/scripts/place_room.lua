-- Place a room (ClusterStore::place_room), atomically even with several signaling nodes
-- racing for it, without scanning the nodes: return the room's live node, or take the head of
-- the candidates (the live, not draining, not full nodes, by most load headroom; ties: lowest
-- id), record the room and reserve a new room's cost and one participant on that node. Rules
-- in docs/cluster.md, "Placement".
--
-- The sorted sets hold what heartbeats wrote (`ClusterStore::heartbeat`): a node whose
-- heartbeats stopped is still in them until removed here, lazily. Each call first removes at
-- most `budget` nodes silent for longer than `stale`, then looks at most at `budget` heads:
-- bounded work whatever the number of nodes (O(budget × log n)).
-- KEYS: room:{room}, node-candidates, node-heartbeats, node-counts
-- ARGV: now (ms), stale after (ms), room record TTL (ms), new room reservation (fpps),
--       budget (most nodes removed, most heads looked at)
-- Returns {node id, 1 if placed now (0 if the room was already on it), the dead node the
-- room left or ''}; {'', 2, ''} when the budget ran out on dead heads (many nodes died at
-- once: call again, each call removes up to 2 × budget of them); false when no node
-- qualifies.
local room_key, candidates, heartbeats, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, stale, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local reservation, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
-- Live: a heartbeat at `cutoff` or later (at most `stale` ms old).
local cutoff = now - stale
local function forget(id)
  redis.call('ZREM', candidates, id)
  redis.call('ZREM', heartbeats, id)
  redis.call('HDEL', counts, id .. ':participants', id .. ':capacity', id .. ':load',
    id .. ':load_capacity')
end
local function alive(id)
  local hb = redis.call('ZSCORE', heartbeats, id)
  return hb and tonumber(hb) >= cutoff
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', heartbeats, '-inf', '(' .. cutoff,
    'LIMIT', 0, budget)) do
  forget(id)
end
local existing = redis.call('GET', room_key)
if existing and alive(existing) then
  redis.call('PEXPIRE', room_key, ttl)
  return {existing, 0, ''}
end
local best, exhausted = nil, true
for _ = 1, budget do
  local head = redis.call('ZRANGE', candidates, 0, 0, 'WITHSCORES')
  -- A score is load - load_capacity: at 0 or more the node has no headroom left.
  if #head == 0 or tonumber(head[2]) >= 0 then
    exhausted = false
    break
  end
  if alive(head[1]) then
    best, exhausted = head[1], false
    break
  end
  -- Silent (beyond this call's removals) or its link dropped: not a candidate until its next
  -- heartbeat.
  redis.call('ZREM', candidates, head[1])
end
if not best then
  if exhausted then
    return {'', 2, ''}
  end
  return false
end
redis.call('SET', room_key, best, 'PX', ttl)
local load = redis.call('HINCRBY', counts, best .. ':load', reservation)
local participants = redis.call('HINCRBY', counts, best .. ':participants', 1)
local f = redis.call('HMGET', counts, best .. ':capacity', best .. ':load_capacity')
local capacity, load_capacity = tonumber(f[1] or '0'), tonumber(f[2] or '0')
if participants >= capacity or load >= load_capacity then
  redis.call('ZREM', candidates, best)
else
  redis.call('ZADD', candidates, load - load_capacity, best)
end
return {best, 1, existing or ''}
