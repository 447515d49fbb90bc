-- Reserve load on a media node (ClusterStore::reserve_load): a participant joined one of its
-- rooms. Only on a node whose hash exists: HINCRBY alone would create a hash with nothing but
-- `load` in it. The node's next heartbeat overwrites `load` with its own figure.
-- KEYS: node:{id}
-- ARGV: fpps
-- Returns the new load, or false when the node has no hash.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
return redis.call('HINCRBY', KEYS[1], 'load', ARGV[1])
