//! The room registry: one room actor per room key, created on first join, forgotten when
//! the room closes.

use std::collections::HashMap;

use actix::prelude::*;

use crate::media_link::MediaLink;
use crate::messages::{GetRoom, RoomClosed, RoomKey};
use crate::room::Room;

pub struct Registry {
    rooms: HashMap<RoomKey, Addr<Room>>,
    link: Addr<MediaLink>,
    room_cap: usize,
    heartbeat_interval_ms: u64,
}

impl Registry {
    pub fn new(link: Addr<MediaLink>, room_cap: usize, heartbeat_interval_ms: u64) -> Self {
        Registry {
            rooms: HashMap::new(),
            link,
            room_cap,
            heartbeat_interval_ms,
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<GetRoom> for Registry {
    type Result = MessageResult<GetRoom>;
    /// The live room actor for a key; a room that is stopping counts as gone.
    fn handle(&mut self, msg: GetRoom, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.rooms.get(&msg.key).filter(|a| a.connected()) {
            return MessageResult(addr.clone());
        }
        let room = Room::new(
            msg.key.clone(),
            self.room_cap,
            self.link.clone(),
            ctx.address(),
            self.heartbeat_interval_ms,
        )
        .start();
        self.rooms.insert(msg.key, room.clone());
        MessageResult(room)
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
