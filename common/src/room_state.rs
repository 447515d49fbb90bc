//! Rooms shared by several signaling nodes, in Redis: who is in each room (and on which
//! signaling instance their session lives), the room event channel every instance listens
//! to, and the signaling instances' own heartbeats so that survivors clean up after a dead
//! one. Key schema in `docs/cluster.md`.
//!
//! Every write that must agree across instances is one Lua script (atomic on the server).

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterError, ClusterStore};
use crate::protocol::ParticipantInfo;

/// A signaling instance whose heartbeat is older than this is dead.
pub const SIGNALING_STALE_MS: u64 = 5_000;
/// Lifetime of a signaling instance's hash after its last heartbeat.
const SIGNALING_TTL_MS: u64 = 15_000;

/// A member of a room as recorded in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    #[serde(flatten)]
    pub participant: ParticipantInfo,
    /// The signaling instance holding the member's session (the only one that writes it).
    pub signaling: String,
    /// Proves a `resume` comes from the member's own browser.
    pub resume_secret: String,
}

/// What removing a member found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// It was there and is removed.
    Removed(MemberRecord),
    /// It was not there (gone already, or lost with a Redis restart).
    Absent,
    /// Another signaling instance owns it (it resumed there): left alone.
    OwnedBy(String),
}

/// A media node as the operators' node list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    pub link_url: String,
    pub udp_addr: String,
    pub capacity: u32,
    pub participants: u32,
    /// Milliseconds since the last heartbeat.
    pub heartbeat_age_ms: u64,
    pub live: bool,
    pub draining: bool,
}

/// Join: refuse when full (a member already recorded may come back), else record the
/// member, index the room and the member's instance; return every member.
const JOIN_MEMBER: &str = include_str!("cluster/scripts/join_member.lua");

/// Leave: remove the member (only if `instance` still owns it, when given); when the room is
/// empty drop its records everywhere. Returns the removed record, or nil.
const LEAVE_MEMBER: &str = include_str!("cluster/scripts/leave_member.lua");

/// Update a member's record, only if `instance` owns it.
const UPDATE_MEMBER: &str = include_str!("cluster/scripts/update_member.lua");

/// Resume: hand the member to `instance` if the secret matches; return the new record and
/// every member.
const CLAIM_MEMBER: &str = include_str!("cluster/scripts/claim_member.lua");

/// Periodic re-assertion by one instance of one room (recreates everything after a Redis
/// restart, drops records of its own that it no longer has): room -> node unless the room
/// already names one, the room in its node's and community's sets, exactly `ARGV[6..]` as
/// this instance's members. Returns the room's node and every member.
const ASSERT_ROOM: &str = include_str!("cluster/scripts/assert_room.lua");

/// Take over the instances dead for `ARGV[1]` ms or more: each is claimed by exactly one
/// caller (recorded in the cleanup hash until it is done), which gets its member entries
/// (`pid@room`) to clean up. A claim is returned again to its claimer until it is finished
/// (a failed cleanup is retried), and to anyone once its claimer is silent for `ARGV[5]` ms.
/// An instance heartbeating again meanwhile is dropped from the cleanup.
const CLAIM_DEAD_SIGNALING: &str = include_str!("cluster/scripts/claim_dead_signaling.lua");

/// `link_url`, `udp_addr`, `capacity`, `participants`, `hb`, `draining` of a node hash.
type NodeFields = (
    Option<String>,
    Option<String>,
    Option<u32>,
    Option<u32>,
    Option<u64>,
    Option<String>,
);

fn records(values: Vec<String>) -> Vec<MemberRecord> {
    values
        .iter()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect()
}

fn encode(record: &MemberRecord) -> String {
    // Invariant: a struct of strings and booleans always serializes.
    serde_json::to_string(record).expect("member record serializes")
}

impl ClusterStore {
    fn members_key(&self, room: &str) -> String {
        self.key(&format!("room:{room}:members"))
    }
    fn community_rooms_key(&self, community: &str) -> String {
        self.key(&format!("community:{community}:rooms"))
    }
    fn instance_members_key(&self, instance: &str) -> String {
        self.key(&format!("signaling:{instance}:members"))
    }

    /// Record a member joining `room` (`community/name`); `RoomFull` when it holds `cap`.
    /// Returns every member, the new one included.
    pub async fn join_member(
        &self,
        room: &str,
        community: &str,
        record: &MemberRecord,
        cap: usize,
        ttl_ms: u64,
    ) -> Result<Vec<MemberRecord>, ClusterError> {
        let mut conn = self.conn();
        let all: Option<Vec<String>> = Script::new(JOIN_MEMBER)
            .key(self.members_key(room))
            .key(self.community_rooms_key(community))
            .key(self.instance_members_key(&record.signaling))
            .arg(&record.participant.participant_id)
            .arg(encode(record))
            .arg(cap)
            .arg(room)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        all.map(records).ok_or(ClusterError::RoomFull)
    }

    /// Remove a member; with `only_instance`, only while that instance owns it.
    pub async fn leave_member(
        &self,
        room: &str,
        community: &str,
        participant_id: &str,
        only_instance: Option<&str>,
    ) -> Result<Left, ClusterError> {
        let mut conn = self.conn();
        let outcome: Vec<String> = Script::new(LEAVE_MEMBER)
            .key(self.members_key(room))
            .key(self.community_rooms_key(community))
            .key(self.key(&format!("room:{room}")))
            .arg(participant_id)
            .arg(room)
            .arg(only_instance.unwrap_or(""))
            .arg(self.prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(match outcome.as_slice() {
            [status, record] if status == "removed" => match serde_json::from_str(record) {
                Ok(record) => Left::Removed(record),
                Err(_) => Left::Absent, // Not a record we wrote; it is gone now anyway.
            },
            [status, owner] if status == "owned" => Left::OwnedBy(owner.clone()),
            _ => Left::Absent,
        })
    }

    /// Store a member's new state; false if `record.signaling` does not own it any more.
    pub async fn update_member(
        &self,
        room: &str,
        record: &MemberRecord,
    ) -> Result<bool, ClusterError> {
        let mut conn = self.conn();
        let updated: i64 = Script::new(UPDATE_MEMBER)
            .key(self.members_key(room))
            .arg(&record.participant.participant_id)
            .arg(encode(record))
            .arg(&record.signaling)
            .invoke_async(&mut conn)
            .await?;
        Ok(updated == 1)
    }

    /// Hand a member to `instance` if `secret` is its resume secret. Returns its record and
    /// every member of the room.
    pub async fn claim_member(
        &self,
        room: &str,
        participant_id: &str,
        secret: &str,
        instance: &str,
    ) -> Result<Option<(MemberRecord, Vec<MemberRecord>)>, ClusterError> {
        let mut conn = self.conn();
        let claimed: Option<(String, Vec<String>)> = Script::new(CLAIM_MEMBER)
            .key(self.members_key(room))
            .arg(participant_id)
            .arg(secret)
            .arg(instance)
            .arg(room)
            .arg(self.prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(claimed.and_then(|(me, all)| Some((serde_json::from_str(&me).ok()?, records(all)))))
    }

    /// Re-assert one instance's view of a room (see `ASSERT_ROOM`). Returns the node the room
    /// is recorded on and every member.
    pub async fn assert_room(
        &self,
        room: &str,
        community: &str,
        node: &str,
        instance: &str,
        mine: &[MemberRecord],
        ttl_ms: u64,
    ) -> Result<(String, Vec<MemberRecord>), ClusterError> {
        let mut conn = self.conn();
        let assert = Script::new(ASSERT_ROOM);
        let mut script = assert.prepare_invoke();
        script
            .key(self.members_key(room))
            .key(self.community_rooms_key(community))
            .key(self.key(&format!("room:{room}")))
            .key(self.instance_members_key(instance))
            .arg(room)
            .arg(node)
            .arg(instance)
            .arg(ttl_ms)
            .arg(self.prefix());
        for record in mine {
            script
                .arg(&record.participant.participant_id)
                .arg(encode(record));
        }
        let (current, all): (String, Vec<String>) = script.invoke_async(&mut conn).await?;
        Ok((current, records(all)))
    }

    /// Every member of a room.
    pub async fn room_members(&self, room: &str) -> Result<Vec<MemberRecord>, ClusterError> {
        let mut conn = self.conn();
        let all: Vec<String> = conn.hvals(self.members_key(room)).await?;
        Ok(records(all))
    }

    /// Rooms of a community that have members (`community/name` ids).
    pub async fn community_rooms(&self, community: &str) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn();
        let mut rooms: Vec<String> = conn.smembers(self.community_rooms_key(community)).await?;
        rooms.sort();
        Ok(rooms)
    }

    /// A signaling instance says it is alive.
    pub async fn signaling_heartbeat(
        &self,
        instance: &str,
        url: &str,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        let key = self.key(&format!("signaling:{instance}"));
        let mut conn = self.conn();
        redis::pipe()
            .atomic()
            .zadd(self.key("signaling"), instance, now_ms)
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
            .key(self.key("signaling"))
            .key(self.key("signaling-cleanup"))
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
            .del(self.key(&format!("signaling:{dead}:members")))
            .hdel(self.key("signaling-cleanup"), dead)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Publish a room event to every signaling instance.
    pub async fn publish_room_event(&self, room: &str, payload: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        conn.publish::<_, _, ()>(self.key(&format!("room-events:{room}")), payload)
            .await?;
        Ok(())
    }

    /// The pattern matching every room event channel.
    pub fn room_events_pattern(&self) -> String {
        self.key("room-events:*")
    }

    /// The room id of a room event channel.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.key("room-events:"))
    }

    /// A media node's link dropped: dead to placement now, instead of after its heartbeat
    /// goes stale. A live node's next heartbeat revives it.
    pub async fn node_down(&self, node_id: &str) -> Result<(), ClusterError> {
        let key = self.key(&format!("node:{node_id}"));
        let mut conn = self.conn();
        let exists: bool = conn.exists(&key).await?;
        if exists {
            conn.hset::<_, _, _, ()>(&key, "hb", 0).await?;
        }
        Ok(())
    }

    /// Every registered media node with its load, for operators.
    pub async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeStatus>, ClusterError> {
        let mut conn = self.conn();
        let mut ids: Vec<String> = conn.smembers(self.key("nodes")).await?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let fields: NodeFields = redis::cmd("HMGET")
                .arg(self.key(&format!("node:{id}")))
                .arg(&[
                    "link_url",
                    "udp_addr",
                    "capacity",
                    "participants",
                    "hb",
                    "draining",
                ])
                .query_async(&mut conn)
                .await?;
            let (Some(link_url), Some(udp_addr), capacity, participants, Some(hb), draining) =
                fields
            else {
                continue; // Expired: gone for good.
            };
            let heartbeat_age_ms = now_ms.saturating_sub(hb);
            out.push(NodeStatus {
                id,
                link_url,
                udp_addr,
                capacity: capacity.unwrap_or(0),
                participants: participants.unwrap_or(0),
                heartbeat_age_ms,
                live: heartbeat_age_ms <= crate::cluster::NODE_STALE_MS,
                draining: draining.as_deref() == Some("1"),
            });
        }
        Ok(out)
    }
}
