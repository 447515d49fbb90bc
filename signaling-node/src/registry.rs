//! The room registry: one room actor per room key, created on first join, forgotten when
//! the room closes. It also decides which media node a new room uses: the one configured
//! media node, or — in cluster mode — the least-loaded live node from Redis.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use conclave_common::cluster::{ClusterError, ClusterStore};
use conclave_common::protocol::ErrorCode;

use crate::media_link::{MediaLink, MediaTarget};
use crate::messages::{GetRoom, Refusal, RoomClosed, RoomKey};
use crate::room::Room;

/// How often live rooms refresh their room -> node record (its TTL is 60 s).
const ROOM_REFRESH_INTERVAL: Duration = Duration::from_secs(20);

/// Where rooms get their media node.
pub enum Placement {
    /// Every room uses this link (embedded media node, or one `--media-node`).
    Fixed(Addr<MediaLink>),
    /// Each new room is placed by the cluster store; links are opened per node on demand.
    Cluster(ClusterStore),
}

pub struct Registry {
    rooms: HashMap<RoomKey, Addr<Room>>,
    placement: Placement,
    /// Cluster mode: the link to each media node used so far.
    links: HashMap<String, Addr<MediaLink>>,
    room_cap: usize,
    heartbeat_interval_ms: u64,
}

impl Registry {
    pub fn new(placement: Placement, room_cap: usize, heartbeat_interval_ms: u64) -> Self {
        Registry {
            rooms: HashMap::new(),
            placement,
            links: HashMap::new(),
            room_cap,
            heartbeat_interval_ms,
        }
    }

    fn open_room(
        &mut self,
        key: RoomKey,
        link: Addr<MediaLink>,
        ctx: &mut Context<Self>,
    ) -> Addr<Room> {
        let room = Room::new(
            key.clone(),
            self.room_cap,
            link,
            ctx.address(),
            self.heartbeat_interval_ms,
        )
        .start();
        self.rooms.insert(key, room.clone());
        room
    }

    fn live_room(&self, key: &RoomKey) -> Option<Addr<Room>> {
        self.rooms.get(key).filter(|a| a.connected()).cloned()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn refusal(e: ClusterError) -> Refusal {
    match e {
        ClusterError::NoCapacity => Refusal {
            code: ErrorCode::NoCapacity,
            message: "no media node has room for a new call; try again later".into(),
        },
        ClusterError::Redis(e) => Refusal {
            code: ErrorCode::Unavailable,
            message: format!("cluster state unavailable: {e}"),
        },
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Keep the room -> node records of live rooms from expiring.
        ctx.run_interval(ROOM_REFRESH_INTERVAL, |registry, ctx| {
            let Placement::Cluster(store) = &registry.placement else {
                return;
            };
            for key in registry.rooms.keys() {
                let (store, id) = (store.clone(), key.id());
                ctx.spawn(
                    async move {
                        if let Err(e) = store.place_room(&id, now_ms()).await {
                            tracing::warn!(room = %id, error = %e, "room record refresh failed");
                        }
                    }
                    .into_actor(registry),
                );
            }
        });
    }
}

impl Handler<GetRoom> for Registry {
    type Result = AtomicResponse<Self, Result<Addr<Room>, Refusal>>;
    /// The live room actor for a key; a new room is placed first. Atomic: no other lookup
    /// runs while a placement is in flight, so one room never gets two actors.
    fn handle(&mut self, msg: GetRoom, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(room) = self.live_room(&msg.key) {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(room))));
        }
        let store = match &self.placement {
            Placement::Fixed(link) => {
                let room = self.open_room(msg.key, link.clone(), ctx);
                return AtomicResponse::new(Box::pin(fut::ready(Ok(room))));
            }
            Placement::Cluster(store) => store.clone(),
        };
        let id = msg.key.id();
        let placed = async move {
            let node = store.place_room(&id, now_ms()).await?;
            let url = store.node_link_url(&node).await?;
            Ok::<_, ClusterError>((node, url))
        };
        AtomicResponse::new(Box::pin(placed.into_actor(self).map(
            move |placed, registry, ctx| {
                let (node, url) = placed.map_err(refusal)?;
                let Some(url) = url else {
                    return Err(Refusal {
                        code: ErrorCode::Unavailable,
                        message: format!("media node {node} is not registered any more"),
                    });
                };
                let link = registry
                    .links
                    .entry(node.clone())
                    .or_insert_with(|| MediaLink::new(MediaTarget::Remote(url)).start())
                    .clone();
                tracing::info!(room = %msg.key.id(), %node, "room placed");
                Ok(registry.open_room(msg.key, link, ctx))
            },
        )))
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
    fn handle(&mut self, _: RoomCount, _: &mut Context<Self>) -> usize {
        self.rooms.values().filter(|a| a.connected()).count()
    }
}
