//! Signaling instances: each instance's heartbeat, and the claim of dead instances by exactly
//! one survivor, which then removes the members they still owned
//! (`scripts/claim_dead_signaling.lua`). An instance is one process run (`--signaling-id` plus
//! a random suffix), so a restarted node's old members are cleaned up like a dead node's.

use redis::Script;

use super::store::{ClusterError, ClusterStore};

/// A signaling instance whose heartbeat is older than this is dead.
pub const SIGNALING_STALE_MS: u64 = 5_000;
/// Lifetime of a signaling instance's hash after its last heartbeat.
const SIGNALING_TTL_MS: u64 = 15_000;

/// Take over the instances dead for `ARGV[1]` ms or more: each is claimed by exactly one
/// caller (recorded in the cleanup hash until it is done), which gets its member entries
/// (`pid@room`) to clean up. A claim is returned again to its claimer until it is finished
/// (a failed cleanup is retried), and to anyone once its claimer is silent for `ARGV[5]` ms.
/// An instance heartbeating again meanwhile is dropped from the cleanup.
const CLAIM_DEAD_SIGNALING: &str = include_str!("scripts/claim_dead_signaling.lua");

impl ClusterStore {
    /// A signaling instance says it is alive.
    pub async fn signaling_heartbeat(
        &self,
        instance: &str,
        url: &str,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        ClusterError::check_name(instance)?;
        let key = self.instance_key(instance);
        let mut conn = self.conn();
        redis::pipe()
            .atomic()
            .zadd(self.instances_key(), instance, now_ms)
            .ignore()
            .hset_multiple(&key, &[("url", url), ("hb", &now_ms.to_string())])
            .ignore()
            .pexpire(&key, SIGNALING_TTL_MS as i64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Claim the instances silent for `dead_after_ms` for `me`: each is returned to one
    /// caller only, with its members as `(participant_id, room)`, again at each call until
    /// [`finish_dead_signaling`](Self::finish_dead_signaling) (so a cleanup cut short by a
    /// Redis error is completed later, by `me` or, if `me` dies, by another survivor).
    pub async fn claim_dead_signaling(
        &self,
        me: &str,
        now_ms: u64,
        dead_after_ms: u64,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, ClusterError> {
        let mut conn = self.conn();
        let flat: Vec<redis::Value> = Script::new(CLAIM_DEAD_SIGNALING)
            .key(self.instances_key())
            .key(self.cleanup_key())
            .arg(now_ms.saturating_sub(dead_after_ms))
            .arg(self.prefix())
            .arg(me)
            .arg(now_ms)
            .arg(dead_after_ms)
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for pair in flat.chunks(2) {
            let [id, entries] = pair else { continue };
            let id: String = redis::from_redis_value(id)?;
            let entries: Vec<String> = redis::from_redis_value(entries)?;
            let members = entries
                .iter()
                .filter_map(|e| e.split_once('@'))
                .map(|(pid, room)| (pid.to_string(), room.to_string()))
                .collect();
            out.push((id, members));
        }
        Ok(out)
    }

    /// A dead instance is cleaned up: forget it.
    pub async fn finish_dead_signaling(&self, dead: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        redis::pipe()
            .atomic()
            .del(self.instance_members_key(dead))
            .hdel(self.cleanup_key(), dead)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
