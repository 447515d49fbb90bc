-- Take over dead signaling instances (ClusterStore::claim_dead_signaling): each instance
-- silent since the cutoff is claimed by exactly one caller (recorded in the cleanup hash until
-- it is done), which gets its member entries (pid@room) to clean up. A claim is returned again
-- to its claimer until it is finished (a failed cleanup is retried), and to anyone once its
-- claimer is silent for retake_after ms. An instance heartbeating again is dropped from it.
-- KEYS: signaling, signaling-cleanup
-- ARGV: cutoff (ms), key prefix, me (instance), now (ms), retake_after (ms)
-- Returns a flat list: instance id, {pid@room, ...}, instance id, {...}, ...
local instances, cleanup = KEYS[1], KEYS[2]
local cutoff, prefix, me, now, retake_after = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', instances, '-inf', cutoff)) do
  if redis.call('ZREM', instances, id) == 1 then
    redis.call('HSET', cleanup, id, me .. '|' .. now)
  end
end
local out = {}
local claims = redis.call('HGETALL', cleanup)
for i = 1, #claims, 2 do
  local id, claim = claims[i], claims[i + 1]
  local claimer, since = string.match(claim, '^(.*)|(%d+)$')
  since = tonumber(since) or 0
  local beat = redis.call('ZSCORE', instances, id)
  if beat and tonumber(beat) > tonumber(cutoff) then
    -- It came back: its members are live again, not ours to remove.
    redis.call('HDEL', cleanup, id)
  elseif claimer == me or now - since > retake_after then
    redis.call('HSET', cleanup, id, me .. '|' .. now)
    table.insert(out, id)
    table.insert(out, redis.call('SMEMBERS', prefix .. 'signaling:' .. id .. ':members'))
  end
end
return out
