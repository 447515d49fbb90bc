//! The room seam, without Redis: a real room actor on one node (no cluster mirror), with
//! stand-ins for its sessions, its registry and the media node behind a real in-process
//! media link. Joins and leaves must reach every member in order, and the room must close
//! when its last member leaves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use conclave_common::link::{MediaCommand, ToMediaNode};
use conclave_common::protocol::{ErrorCode, LeaveReason, ParticipantInfo, ServerMessage};

use super::messages::{
    Evicted, FromParticipant, JoinRoom, LeaveRoom, MemberCount, MoveRoom, Outbound,
    ParticipantRequest, RoomKey,
};
use super::{Room, RoomClosed, RoomDeps, RoomOwner};
use crate::error::Refusal;
use crate::media_link::{MediaLink, MediaTarget};

/// What a stand-in saw, in order.
type Log<T> = Arc<Mutex<Vec<T>>>;

/// A session: records what the room sends its browser.
struct FakeSession(Log<ServerMessage>);

impl Actor for FakeSession {
    type Context = Context<Self>;
}

impl Handler<Outbound> for FakeSession {
    type Result = ();
    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(msg.0);
    }
}

impl Handler<Evicted> for FakeSession {
    type Result = ();
    fn handle(&mut self, _: Evicted, _: &mut Context<Self>) {}
}

/// The registry: records closed rooms; refuses moves (one node).
struct FakeRegistry(Log<RoomKey>);

impl Actor for FakeRegistry {
    type Context = Context<Self>;
}

impl Handler<RoomClosed> for FakeRegistry {
    type Result = ();
    fn handle(&mut self, msg: RoomClosed, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(msg.key);
    }
}

impl Handler<MoveRoom> for FakeRegistry {
    type Result = Result<(String, Addr<MediaLink>), Refusal>;
    fn handle(&mut self, _: MoveRoom, _: &mut Context<Self>) -> Self::Result {
        Err(Refusal::NotClustered)
    }
}

/// The media node: records commands.
struct FakeMediaNode(Log<MediaCommand>);

impl Actor for FakeMediaNode {
    type Context = Context<Self>;
}

impl Handler<ToMediaNode> for FakeMediaNode {
    type Result = ();
    fn handle(&mut self, msg: ToMediaNode, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(msg.cmd);
    }
}

struct Member {
    info: ParticipantInfo,
    session: Addr<FakeSession>,
    seen: Log<ServerMessage>,
}

impl Member {
    fn new(id: &str) -> Self {
        let seen = Log::default();
        Member {
            info: ParticipantInfo {
                participant_id: id.into(),
                user_id: format!("user-{id}"),
                name: id.to_uppercase(),
                audio: true,
                video: true,
                deafened: false,
                media: None,
            },
            session: FakeSession(seen.clone()).start(),
            seen,
        }
    }

    fn join(&self) -> JoinRoom {
        JoinRoom {
            participant: self.info.clone(),
            session: self.session.clone().recipient(),
            evict: self.session.clone().recipient(),
        }
    }

    fn leave(&self) -> LeaveRoom {
        LeaveRoom {
            participant_id: self.info.participant_id.clone(),
            reason: LeaveReason::Left,
            session: self.session.clone().recipient(),
        }
    }

    /// What this member's browser got so far (after the session handled it).
    async fn seen(&self) -> Vec<ServerMessage> {
        // A round trip through the session's mailbox: what the room sent before is handled.
        self.session
            .send(Outbound(ServerMessage::Left))
            .await
            .unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.pop(); // The marker.
        std::mem::take(&mut *seen)
    }
}

fn start_room(cap: usize) -> (Addr<Room>, Log<RoomKey>, Log<MediaCommand>) {
    let closed = Log::default();
    let registry = FakeRegistry(closed.clone()).start();
    let commands = Log::default();
    let media = FakeMediaNode(commands.clone()).start();
    let link = MediaLink::new(MediaTarget::Local(media.recipient())).start();
    let deps = RoomDeps {
        cap,
        heartbeat_interval_ms: 10_000,
        resume_grace: Duration::from_secs(15),
        instance: "sig-test".into(),
        presence: None,
        cluster: None,
        caps: Default::default(),
        turn: None,
    };
    let owner = RoomOwner {
        closed: registry.clone().recipient(),
        relocate: registry.recipient(),
    };
    let key = RoomKey {
        community: "acme".into(),
        room: "general".into(),
    };
    let room = Room::new(key, link, None, deps, owner).start();
    (room, closed, commands)
}

#[actix_rt::test]
async fn single_node_join_and_leave_reach_every_member() {
    let (room, closed, commands) = start_room(2);
    let (a, b, c) = (Member::new("a"), Member::new("b"), Member::new("c"));

    room.send(a.join()).await.unwrap().unwrap();
    match a.seen().await.as_slice() {
        [ServerMessage::Joined {
            participant_id,
            participants,
            room: name,
            community,
            resumed: false,
            ..
        }] => {
            assert_eq!(participant_id, "a");
            assert!(participants.is_empty());
            assert_eq!((name.as_str(), community.as_str()), ("general", "acme"));
        }
        other => panic!("a after its join: {other:?}"),
    }

    room.send(b.join()).await.unwrap().unwrap();
    match b.seen().await.as_slice() {
        [ServerMessage::Joined { participants, .. }] => {
            assert_eq!(participants, &vec![a.info.clone()]);
        }
        other => panic!("b after its join: {other:?}"),
    }
    assert_eq!(
        a.seen().await,
        vec![ServerMessage::ParticipantJoined {
            participant: b.info.clone()
        }]
    );

    // The cap holds on one node (no Redis to count members).
    let full = room.send(c.join()).await.unwrap().unwrap_err();
    assert_eq!(full.code(), ErrorCode::RoomFull);
    assert_eq!(room.send(MemberCount).await.unwrap(), 2);

    // The offer of a member goes to the media node through the link.
    room.send(FromParticipant {
        participant_id: "b".into(),
        request: ParticipantRequest::Offer("v=0".into()),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        commands.lock().unwrap().as_slice(),
        [MediaCommand::AddPeer { participant_id, .. }] if participant_id == "b"
    ));

    room.send(a.leave()).await.unwrap();
    assert_eq!(
        b.seen().await,
        vec![ServerMessage::ParticipantLeft {
            participant_id: "a".into(),
            reason: LeaveReason::Left,
        }]
    );
    assert_eq!(room.send(MemberCount).await.unwrap(), 1);
    assert!(closed.lock().unwrap().is_empty(), "a member is left");

    // The last member leaves: its peer goes and the room closes.
    room.send(b.leave()).await.unwrap();
    for _ in 0..100 {
        if !closed.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closed.lock().unwrap().len(), 1, "the empty room closed");
    assert!(commands.lock().unwrap().iter().any(
        |c| matches!(c, MediaCommand::RemovePeer { participant_id, .. } if participant_id == "b")
    ));
}
