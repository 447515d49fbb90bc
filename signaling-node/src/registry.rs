//! The room registry: one room actor per room key, created on first join, forgotten when
//! the room closes. It also decides which media node a room uses: the one configured media
//! node, or — in cluster mode — the least-loaded live node from Redis, again when the room's
//! node dies.
//!
//! The registry sits above the rooms: it opens them and hands each a [`RoomOwner`] (two
//! `Recipient`s of its own address), through which a room reports that it closed and asks to
//! move; a room never names the registry.

use std::collections::HashMap;

use actix::prelude::*;
use conclave_common::cluster::now_ms;
use conclave_common::cluster::ClusterStore;
use conclave_common::link_auth::LinkSecret;

use crate::error::Refusal;
use crate::media_link::{MediaLink, MediaTarget, RemoteMedia};
use crate::metrics;
use crate::room::messages::{AssertNow, Drain, MoveRoom, RoomKey};
use crate::room::{Room, RoomClosed, RoomDeps, RoomOwner, ASSERT_INTERVAL};

/// Where rooms get their media node.
pub enum Placement {
    /// Every room uses this link (embedded media node, or one `--media-node`).
    Fixed(Addr<MediaLink>),
    /// Each new room is placed by the cluster store; links are opened per node on demand,
    /// signed with the link secret (`None` only in `--dev`).
    Cluster {
        store: ClusterStore,
        link_secret: Option<LinkSecret>,
    },
}

/// Session -> registry: the room actor for `key`, created (and placed) if needed.
#[derive(Message)]
#[rtype(result = "Result<Addr<Room>, Refusal>")]
pub struct GetRoom {
    pub key: RoomKey,
}

pub struct Registry {
    rooms: HashMap<RoomKey, Addr<Room>>,
    placement: Placement,
    /// Cluster mode: the link to each media node in use.
    links: HashMap<String, Addr<MediaLink>>,
    /// What each room gets.
    room_deps: RoomDeps,
    /// This registry as its rooms see it.
    owner: RoomOwner,
}

impl Registry {
    pub fn start(placement: Placement, room_deps: RoomDeps) -> Addr<Self> {
        Registry::create(|ctx| Registry {
            rooms: HashMap::new(),
            placement,
            links: HashMap::new(),
            room_deps,
            owner: RoomOwner {
                closed: ctx.address().recipient(),
                relocate: ctx.address().recipient(),
            },
        })
    }

    fn open_room(
        &mut self,
        key: RoomKey,
        link: Addr<MediaLink>,
        node: Option<String>,
    ) -> Addr<Room> {
        let room = Room::new(
            key.clone(),
            link,
            node,
            self.room_deps.clone(),
            self.owner.clone(),
        )
        .start();
        self.rooms.insert(key, room.clone());
        room
    }

    fn live_room(&self, key: &RoomKey) -> Option<Addr<Room>> {
        self.rooms.get(key).filter(|a| a.connected()).cloned()
    }

    /// The link to a media node, opened if needed (a link whose node died has stopped).
    fn link_to(&mut self, node: &str, url: String) -> Addr<MediaLink> {
        let secret = match &self.placement {
            Placement::Cluster { link_secret, .. } => link_secret.clone(),
            Placement::Fixed(_) => None,
        };
        let open = || {
            MediaLink::on_demand(MediaTarget::Remote(RemoteMedia {
                url,
                secret,
                node_id: Some(node.to_string()),
            }))
            .start()
        };
        match self.links.get(node) {
            Some(link) if link.connected() => link.clone(),
            _ => {
                let link = open();
                self.links.insert(node.to_string(), link.clone());
                link
            }
        }
    }
}

/// The room's node (placing the room if it has no live one) and that node's link URL.
async fn place(store: ClusterStore, room: String) -> Result<(String, String), Refusal> {
    let timer = metrics::PLACEMENT_SECONDS.start_timer();
    let node = metrics::timed("place", store.place_room(&room, now_ms()))
        .await
        .map_err(Refusal::placement)?;
    let url = metrics::timed("place", store.node_link_url(&node)).await;
    timer.observe_duration();
    match url.map_err(Refusal::placement)? {
        Some(url) => Ok((node, url)),
        None => Err(Refusal::NodeGone(node)),
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    /// In cluster mode, tick every room's re-assertion at once (one pipeline per tick).
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.room_deps.cluster.is_some() {
            ctx.run_interval(ASSERT_INTERVAL, |registry, _| {
                for room in registry.rooms.values() {
                    room.do_send(AssertNow);
                }
            });
        }
    }
}

impl Handler<GetRoom> for Registry {
    type Result = AtomicResponse<Self, Result<Addr<Room>, Refusal>>;
    /// The live room actor for a key; a new room is placed first. Atomic: no other lookup
    /// runs while a placement is in flight, so one room never gets two actors.
    fn handle(&mut self, msg: GetRoom, _: &mut Context<Self>) -> Self::Result {
        if let Some(room) = self.live_room(&msg.key) {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(room))));
        }
        let store = match &self.placement {
            Placement::Fixed(link) => {
                let room = self.open_room(msg.key, link.clone(), None);
                return AtomicResponse::new(Box::pin(fut::ready(Ok(room))));
            }
            Placement::Cluster { store, .. } => store.clone(),
        };
        AtomicResponse::new(Box::pin(place(store, msg.key.id()).into_actor(self).map(
            move |placed, registry, _| {
                let (node, url) = placed?;
                let link = registry.link_to(&node, url);
                tracing::info!(room = %msg.key.id(), %node, "room placed");
                Ok(registry.open_room(msg.key, link, Some(node)))
            },
        )))
    }
}

impl Handler<MoveRoom> for Registry {
    type Result = ResponseActFuture<Self, Result<(String, Addr<MediaLink>), Refusal>>;
    /// A room's media node died: take it out of placement now (its link dropped; waiting for
    /// the heartbeat to go stale would cost seconds) and place the room on a live node.
    fn handle(&mut self, msg: MoveRoom, _: &mut Context<Self>) -> Self::Result {
        let Placement::Cluster { store, .. } = &self.placement else {
            return Box::pin(fut::ready(Err(Refusal::NotClustered)));
        };
        let store = store.clone();
        let moved = async move {
            if let Some(dead) = &msg.dead_node {
                store.node_down(dead).await.map_err(Refusal::placement)?;
            }
            place(store, msg.key.id()).await
        };
        Box::pin(moved.into_actor(self).map(|placed, registry, _| {
            let (node, url) = placed?;
            Ok((node.clone(), registry.link_to(&node, url)))
        }))
    }
}

impl Handler<RoomClosed> for Registry {
    type Result = ();
    /// Forget a closed room (unless a newer actor already took its key).
    fn handle(&mut self, msg: RoomClosed, _: &mut Context<Self>) {
        if self.rooms.get(&msg.key) == Some(&msg.addr) {
            self.rooms.remove(&msg.key);
        }
    }
}

/// Number of open rooms (health, tests).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RoomCount;

impl Handler<RoomCount> for Registry {
    type Result = usize;
    /// Count the rooms whose actor still runs.
    fn handle(&mut self, _: RoomCount, _: &mut Context<Self>) -> usize {
        self.rooms.values().filter(|a| a.connected()).count()
    }
}

/// The open rooms of a community: name and actor (the query API in single-node mode).
#[derive(Message)]
#[rtype(result = "Vec<(String, Addr<Room>)>")]
pub struct CommunityRooms(pub String);

impl Handler<CommunityRooms> for Registry {
    type Result = Vec<(String, Addr<Room>)>;
    /// List the running rooms of one community.
    fn handle(&mut self, msg: CommunityRooms, _: &mut Context<Self>) -> Self::Result {
        self.rooms
            .iter()
            .filter(|(key, addr)| key.community == msg.0 && addr.connected())
            .map(|(key, addr)| (key.room.clone(), addr.clone()))
            .collect()
    }
}

/// Draining: every room asks its members to reconnect elsewhere.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainRooms;

impl Handler<DrainRooms> for Registry {
    type Result = ();
    /// Pass the drain on to every room.
    fn handle(&mut self, _: DrainRooms, _: &mut Context<Self>) {
        for room in self.rooms.values() {
            room.do_send(Drain);
        }
    }
}
