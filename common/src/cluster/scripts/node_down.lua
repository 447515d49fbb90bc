-- A media node's link dropped (ClusterStore::node_down): the node is dead to placement from
-- now until its next heartbeat (which writes a newer `hb`). Records the heartbeat it died
-- after as `down_hb` rather than overwriting `hb`, so the node list still shows when it last
-- reported; comparing the two values, not clocks, keeps this free of clock skew between
-- machines. Only on a node whose hash exists (HSET alone would create half a node that never
-- expires).
-- KEYS: node:{id}
-- Returns 1 when marked, 0 when the node has no hash.
local hb = redis.call('HGET', KEYS[1], 'hb')
if not hb then
  return 0
end
redis.call('HSET', KEYS[1], 'down_hb', hb)
return 1
