//! Cluster upkeep of a signaling instance: its own heartbeat in Redis, and the cleanup of
//! instances that died. A dead instance's members stay in their rooms for the resume grace
//! period (their browsers reconnect through the load balancer and `resume` elsewhere); the
//! ones still owned by it after that are removed here by exactly one survivor, with a
//! `participantLeft` for the rooms and a `disconnected` presence event. Their media peers
//! expire on the media node by themselves (orphans of a closed link).

use std::time::Duration;

use actix::Addr;
use conclave_common::cluster::{now_ms, ClusterStore};
use conclave_common::cluster::{Left, SIGNALING_STALE_MS};
use conclave_common::presence::{PresenceEvent, PresenceKind};
use conclave_common::protocol::{LeaveReason, ServerMessage};

use crate::metrics;
use crate::presence::{PresenceSink, Publish};
use crate::room_bus::BusMessage;

/// Heartbeat (and sweep) period.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct Upkeep {
    pub store: ClusterStore,
    pub instance: String,
    /// Where operators reach this instance (shown in Redis).
    pub url: String,
    pub resume_grace: Duration,
    pub presence: Option<Addr<PresenceSink>>,
}

impl Upkeep {
    /// Run forever: heartbeat, then clean up after instances dead past the grace period.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        let mut redis_ok = true;
        loop {
            tick.tick().await;
            let result = self.tick().await;
            match (&result, redis_ok) {
                (Err(e), true) => tracing::warn!(error = %e, "signaling heartbeat failed"),
                (Ok(()), false) => tracing::info!("signaling heartbeat restored"),
                _ => {}
            }
            redis_ok = result.is_ok();
        }
    }

    async fn tick(&self) -> Result<(), conclave_common::cluster::ClusterError> {
        let now = now_ms();
        let beat = self
            .store
            .signaling_heartbeat(&self.instance, &self.url, now);
        let beat = metrics::timed("heartbeat", beat).await;
        metrics::REDIS_UP.set(beat.is_ok() as i64);
        beat?;
        let dead_after = SIGNALING_STALE_MS + self.resume_grace.as_millis() as u64;
        let claimed = self
            .store
            .claim_dead_signaling(&self.instance, now, dead_after);
        for (dead, members) in metrics::timed("sweep", claimed).await? {
            tracing::info!(instance = %dead, members = members.len(), "cleaning up a dead signaling instance");
            for (pid, room) in members {
                // On an error the claim stays ours and the next tick takes up what is left.
                self.remove(&dead, &pid, &room).await?;
            }
            self.store.finish_dead_signaling(&dead).await?;
        }
        Ok(())
    }

    async fn remove(
        &self,
        dead: &str,
        pid: &str,
        room: &str,
    ) -> Result<(), conclave_common::cluster::ClusterError> {
        let Some((community, name)) = room.split_once('/') else {
            return Ok(());
        };
        let Left::Removed(record) = self
            .store
            .leave_member(room, community, pid, Some(dead))
            .await?
        else {
            return Ok(()); // Resumed elsewhere, or gone already.
        };
        let reason = LeaveReason::Disconnected;
        let left = BusMessage {
            // On behalf of the dead instance, so that every live one (us too) applies it.
            from: dead.to_string(),
            message: ServerMessage::ParticipantLeft {
                participant_id: pid.to_string(),
                reason,
            },
        };
        self.store.publish_room_event(room, &left.encode()).await?;
        if let Some(sink) = &self.presence {
            let info = record.participant;
            sink.do_send(Publish(PresenceEvent {
                kind: PresenceKind::Disconnected,
                community: community.to_string(),
                room: name.to_string(),
                participant_id: info.participant_id,
                user_id: info.user_id,
                name: info.name,
                audio: info.audio,
                video: info.video,
                deafened: info.deafened,
                reason: Some("disconnected".into()),
                at_ms: now_ms(),
                node: self.instance.clone(),
            }));
        }
        metrics::LEAVES.with_label_values(&["disconnected"]).inc();
        tracing::info!(%room, participant = %pid, instance = %dead, "member of a dead instance removed");
        Ok(())
    }
}
