//! Rooms and their members, shared by several signaling instances: who is in each room, on
//! which instance their session lives, and the indexes kept beside them (a community's rooms,
//! an instance's members). Join, leave, update, resume (claim) and the periodic re-assertion
//! are each one Lua script in `scripts/`, atomic on the server.

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::store::{ClusterError, ClusterStore, NODE_TTL_MS};
use crate::protocol::ParticipantInfo;

/// Join: refuse when full (a member already recorded may come back), else record the
/// member, index the room and the member's instance; return every member.
const JOIN_MEMBER: &str = include_str!("scripts/join_member.lua");

/// Leave: remove the member (only if `instance` still owns it, when given); when the room is
/// empty drop its records everywhere. Returns the removed record, or nil.
const LEAVE_MEMBER: &str = include_str!("scripts/leave_member.lua");

/// Update a member's record, only if `instance` owns it.
const UPDATE_MEMBER: &str = include_str!("scripts/update_member.lua");

/// Resume: hand the member to `instance` if the secret matches; return the new record and
/// every member.
const CLAIM_MEMBER: &str = include_str!("scripts/claim_member.lua");

/// Periodic re-assertion by one instance of one room (recreates everything after a Redis
/// restart, drops records of its own that it no longer has): room -> node unless the room
/// already names one, the room in its community's set, exactly `ARGV[5..]` as this
/// instance's members. Returns the room's node and every member.
const ASSERT_ROOM: &str = include_str!("scripts/assert_room.lua");

/// One room's re-assertion by this instance, for [`ClusterStore::assert_rooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAssertion {
    /// `community/name`.
    pub room: String,
    pub community: String,
    /// The media node this instance has the room on.
    pub node: String,
    /// This instance's members of the room (not empty: an assertion without members would
    /// recreate the room's keys for nobody).
    pub mine: Vec<MemberRecord>,
}

/// What one room's re-assertion found: the node the room is recorded on, and every member.
pub type Asserted = Result<(String, Vec<MemberRecord>), ClusterError>;

/// A member of a room as recorded in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    #[serde(flatten)]
    pub participant: ParticipantInfo,
    /// The signaling instance holding the member's session (the only one that writes it).
    pub signaling: String,
    /// SHA-256 (hex) of the member's resume secret, which proves a `resume` comes from the
    /// member's own browser: Redis holds what checks the secret, not the secret.
    pub resume_hash: String,
}

/// What a member record keeps of a resume secret ([`MemberRecord::resume_hash`]).
pub fn resume_hash(secret: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// A recorded join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Every member, the new one included.
    pub members: Vec<MemberRecord>,
    /// The same user's earlier members, removed (one seat per user): their instances must
    /// let their sessions go.
    pub displaced: Vec<MemberRecord>,
}

/// A resume's claim on a member: who, proven by what, and the secret that replaces it.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub participant_id: &'a str,
    /// The user the resuming client's token names: it must be the member's.
    pub user_id: &'a str,
    /// The resume secret the client presents.
    pub secret: &'a str,
    /// The member's resume secret from now on (each resume rotates it).
    pub next_secret: &'a str,
}

/// What a resume's claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The member is the claimer's now: its record, and every member's.
    Taken(MemberRecord, Vec<MemberRecord>),
    /// No such member (gone, or lost with a Redis restart).
    Absent,
    /// The member is there, but the secret or the user does not match: whatever a node
    /// holds of it locally is stale (it resumed elsewhere, rotating its secret).
    Refused,
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
    /// Record a member joining `room` (`community/name`); `RoomFull` when it holds `cap`.
    /// The same user's earlier members leave (one seat per user); see [`Joined`].
    pub async fn join_member(
        &self,
        room: &str,
        community: &str,
        record: &MemberRecord,
        cap: usize,
        ttl_ms: u64,
    ) -> Result<Joined, ClusterError> {
        ClusterError::check_room_id(room)?;
        ClusterError::check_name(community)?;
        ClusterError::check_name(&record.signaling)?;
        let mut conn = self.conn();
        let joined: Option<(Vec<String>, Vec<String>)> = Script::new(JOIN_MEMBER)
            .key(self.members_key(room))
            .key(self.community_rooms_key(community))
            .key(self.instance_members_key(&record.signaling))
            .arg(&record.participant.participant_id)
            .arg(encode(record))
            .arg(cap)
            .arg(room)
            .arg(ttl_ms)
            .arg(&record.participant.user_id)
            .arg(self.prefix())
            .invoke_async(&mut conn)
            .await?;
        let (displaced, members) = joined.ok_or(ClusterError::RoomFull)?;
        Ok(Joined {
            members: records(members),
            displaced: records(displaced),
        })
    }

    /// Remove a member; with `only_instance`, only while that instance owns it.
    pub async fn leave_member(
        &self,
        room: &str,
        community: &str,
        participant_id: &str,
        only_instance: Option<&str>,
    ) -> Result<Left, ClusterError> {
        ClusterError::check_room_id(room)?;
        ClusterError::check_name(community)?;
        let mut conn = self.conn();
        let outcome: Vec<String> = Script::new(LEAVE_MEMBER)
            .key(self.members_key(room))
            .key(self.community_rooms_key(community))
            .key(self.room_key(room))
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
        claim: &Claim<'_>,
        instance: &str,
    ) -> Result<Claimed, ClusterError> {
        let mut conn = self.conn();
        let claimed: redis::Value = Script::new(CLAIM_MEMBER)
            .key(self.members_key(room))
            .arg(claim.participant_id)
            .arg(resume_hash(claim.secret))
            .arg(instance)
            .arg(room)
            .arg(self.prefix())
            .arg(claim.user_id)
            .arg(resume_hash(claim.next_secret))
            .invoke_async(&mut conn)
            .await?;
        Ok(match claimed {
            redis::Value::Nil => Claimed::Absent,
            redis::Value::Int(_) => Claimed::Refused,
            value => {
                let (me, all): (String, Vec<String>) = redis::from_redis_value(&value)?;
                match serde_json::from_str(&me) {
                    Ok(me) => Claimed::Taken(me, records(all)),
                    Err(_) => Claimed::Absent,
                }
            }
        })
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
        let one = RoomAssertion {
            room: room.to_string(),
            community: community.to_string(),
            node: node.to_string(),
            mine: mine.to_vec(),
        };
        let mut answers = self.assert_rooms(instance, &[one], ttl_ms).await?;
        answers.pop().unwrap_or(Err(ClusterError::Timeout))
    }

    /// Re-assert many rooms of one instance in one round trip (one pipeline of `ASSERT_ROOM`
    /// calls, one per room, so no single call holds Redis for long), then add each room to
    /// its node's room set (one `SADD` per node). The answers are in the order of `rooms`;
    /// a room refused (bad name) or whose script failed gets its own error, the others are
    /// asserted. An error of the whole call (Redis away) asserted nothing that can be relied on
    /// — assertions are idempotent: the next one repeats it.
    pub async fn assert_rooms(
        &self,
        instance: &str,
        rooms: &[RoomAssertion],
        ttl_ms: u64,
    ) -> Result<Vec<Asserted>, ClusterError> {
        ClusterError::check_name(instance)?;
        let script = Script::new(ASSERT_ROOM);
        let valid = |a: &RoomAssertion| {
            ClusterError::check_room_id(&a.room)?;
            ClusterError::check_name(&a.community)?;
            ClusterError::check_name(&a.node)
        };
        let mut answers: Vec<Option<Asserted>> = Vec::with_capacity(rooms.len());
        // Loading the script first (cheap when Redis has it) spares a NOSCRIPT round trip
        // after a Redis restart.
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(ASSERT_ROOM).ignore();
        let mut sent = 0;
        for a in rooms {
            if let Err(e) = valid(a) {
                answers.push(Some(Err(e)));
                continue;
            }
            answers.push(None);
            sent += 1;
            let call = pipe.cmd("EVALSHA");
            call.arg(script.get_hash())
                .arg(4)
                .arg(self.members_key(&a.room))
                .arg(self.community_rooms_key(&a.community))
                .arg(self.room_key(&a.room))
                .arg(self.instance_members_key(instance))
                .arg(&a.room)
                .arg(&a.node)
                .arg(instance)
                .arg(ttl_ms);
            for record in &a.mine {
                call.arg(&record.participant.participant_id)
                    .arg(encode(record));
            }
        }
        if sent == 0 {
            return Ok(answers.into_iter().flatten().collect());
        }
        let mut conn = self.conn();
        // Raw answers: one script's error is that room's, not the batch's.
        let values =
            redis::aio::ConnectionLike::req_packed_commands(&mut conn, &pipe, 1, sent).await?;
        let mut values = values.into_iter();
        let mut node_rooms: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (answer, a) in answers.iter_mut().zip(rooms) {
            if answer.is_some() {
                continue;
            }
            let value = values.next().unwrap_or(redis::Value::Nil);
            let asserted = value
                .extract_error()
                .and_then(redis::from_owned_redis_value::<(String, Vec<String>)>)
                .map_err(ClusterError::from)
                .map(|(current, all)| (current, records(all)));
            if let Ok((current, _)) = &asserted {
                node_rooms.entry(current.clone()).or_default().push(&a.room);
            }
            *answer = Some(asserted);
        }
        if !node_rooms.is_empty() {
            // The room in its node's set; a set made here (after a Redis restart, or of a node
            // that has died) gets the node's TTL (NX: a live node's heartbeats keep it).
            let mut sets = redis::pipe();
            for (node, its_rooms) in &node_rooms {
                let key = self.node_rooms_key(node);
                sets.sadd(&key, its_rooms).ignore();
                sets.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(NODE_TTL_MS)
                    .arg("NX")
                    .ignore();
            }
            sets.query_async::<()>(&mut conn).await?;
        }
        Ok(answers.into_iter().flatten().collect())
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
}
