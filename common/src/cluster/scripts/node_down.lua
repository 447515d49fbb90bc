-- A media node's link dropped (ClusterStore::node_down): the node is dead to placement from
-- now until its next heartbeat (which writes a newer `hb` and adds it to the sorted sets
-- again). Records the heartbeat it died after as `down_hb` rather than overwriting `hb`, so
-- the node list still shows when it last reported; comparing the two values, not clocks,
-- keeps this free of clock skew between machines. Only on a node whose hash exists (HSET
-- alone would create half a node that never expires).
-- KEYS: node:{id}, node-candidates, node-heartbeats, node-counts
-- ARGV: node id
-- Returns 1 when marked, 0 when the node has no hash.
local node, candidates, heartbeats, counts, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
redis.call('ZREM', candidates, id)
redis.call('ZREM', heartbeats, id)
redis.call('HDEL', counts, id .. ':participants', id .. ':capacity', id .. ':load',
  id .. ':load_capacity')
local hb = redis.call('HGET', node, 'hb')
if not hb then
  return 0
end
redis.call('HSET', node, 'down_hb', hb)
return 1
