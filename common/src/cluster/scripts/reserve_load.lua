-- Reserve load on a media node (ClusterStore::reserve_load): a participant joined one of its
-- rooms. Only on a node that has counts (a live node's heartbeat wrote them): HINCRBY alone
-- would make counts of a node that is not there. The node's next heartbeat overwrites `load`
-- with its own figure. A candidate node stays in the candidates with its new headroom, or
-- leaves them when it has none left.
-- KEYS: node-counts, node-candidates
-- ARGV: node id, fpps
-- Returns the new load, or false when the node has no counts.
local counts, candidates, id = KEYS[1], KEYS[2], ARGV[1]
local load_capacity = redis.call('HGET', counts, id .. ':load_capacity')
if not load_capacity then
  return false
end
local load = redis.call('HINCRBY', counts, id .. ':load', ARGV[2])
if redis.call('ZSCORE', candidates, id) then
  if load >= tonumber(load_capacity) then
    redis.call('ZREM', candidates, id)
  else
    redis.call('ZADD', candidates, load - tonumber(load_capacity), id)
  end
end
return load
