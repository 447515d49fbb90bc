//! The room bus (cluster mode): room events between signaling instances over Redis pub/sub.
//!
//! A room's members may sit on several signaling instances (the load balancer keeps a room
//! on one, but not always: a node joined or died). Each instance publishes the events of its
//! own members (`participantJoined`, `participantLeft`, `participantState`) on the room's
//! channel; every instance listens to all room channels with one pattern subscription and
//! hands each event to its own actor for that room, if it has one. Pub/sub may lose events
//! while Redis is away: rooms resync from the member records when the bus reconnects, and
//! every few seconds anyway.
//!
//! The bus sits below the rooms: it defines the messages it delivers ([`RemoteRoomEvent`],
//! [`Resync`]) and reaches each room through the `Recipient`s the room registers.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use conclave_common::cluster::ClusterStore;
use conclave_common::protocol::ServerMessage;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// Wait between attempts to (re)subscribe.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// One event on a room channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusMessage {
    /// The signaling instance the event is about (its publisher, or the dead instance a
    /// survivor cleans up for).
    pub from: String,
    pub message: ServerMessage,
}

impl BusMessage {
    pub fn encode(&self) -> String {
        // Invariant: protocol messages always serialize.
        serde_json::to_string(self).expect("bus message serializes")
    }
}

/// Bus -> room: an event another signaling instance published for this room.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoteRoomEvent {
    pub from: String,
    pub message: ServerMessage,
}

/// Bus -> room: the subscription was (re)made and events may have been missed: resync from
/// the member records.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

/// Where the bus delivers one room's events.
pub struct BusRoute {
    pub events: Recipient<RemoteRoomEvent>,
    pub resync: Recipient<Resync>,
}

pub struct RoomBus {
    store: ClusterStore,
    instance: String,
    rooms: HashMap<String, BusRoute>,
}

impl RoomBus {
    pub fn new(store: ClusterStore, instance: String) -> Self {
        RoomBus {
            store,
            instance,
            rooms: HashMap::new(),
        }
    }
}

/// Room -> bus: a room actor of this instance wants its room's events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterBusRoom {
    pub room: String,
    pub route: BusRoute,
}

/// Room -> bus: the room actor stopped. `events` tells it apart from a newer actor of the
/// same room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnregisterBusRoom {
    pub room: String,
    pub events: Recipient<RemoteRoomEvent>,
}

/// A message arrived on a room channel.
#[derive(Message)]
#[rtype(result = "()")]
struct Incoming {
    room: String,
    payload: String,
}

/// The subscription is (again) in place: events may have been missed meanwhile.
#[derive(Message)]
#[rtype(result = "()")]
struct Subscribed;

/// Subscribe to every room channel and feed messages to `bus`, reconnecting forever.
async fn listen(store: ClusterStore, bus: Addr<RoomBus>) {
    loop {
        match store.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.psubscribe(store.room_events_pattern()).await {
                Ok(()) => {
                    bus.do_send(Subscribed);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(room) = store.room_of_channel(msg.get_channel_name()) else {
                            continue;
                        };
                        match msg.get_payload::<String>() {
                            Ok(payload) => bus.do_send(Incoming {
                                room: room.to_string(),
                                payload,
                            }),
                            Err(e) => tracing::warn!(error = %e, "room bus: unreadable message"),
                        }
                    }
                    tracing::warn!("room bus: redis subscription lost; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "room bus: cannot subscribe"),
            },
            Err(e) => tracing::warn!(error = %e, "room bus: redis unreachable"),
        }
        if !bus.connected() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

impl Actor for RoomBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        actix::spawn(listen(self.store.clone(), ctx.address()));
    }
}

impl Handler<RegisterBusRoom> for RoomBus {
    type Result = ();
    /// Deliver this room's events to the given actor from now on.
    fn handle(&mut self, msg: RegisterBusRoom, _: &mut Context<Self>) {
        self.rooms.insert(msg.room, msg.route);
    }
}

impl Handler<UnregisterBusRoom> for RoomBus {
    type Result = ();
    /// Stop delivering to a stopped room actor (unless a newer one took its place).
    fn handle(&mut self, msg: UnregisterBusRoom, _: &mut Context<Self>) {
        if self.rooms.get(&msg.room).map(|r| &r.events) == Some(&msg.events) {
            self.rooms.remove(&msg.room);
        }
    }
}

impl Handler<Incoming> for RoomBus {
    type Result = ();
    /// Hand another instance's event to our actor of that room.
    fn handle(&mut self, msg: Incoming, _: &mut Context<Self>) {
        let Some(room) = self.rooms.get(&msg.room) else {
            return; // No member of that room here.
        };
        match serde_json::from_str::<BusMessage>(&msg.payload) {
            Ok(event) if event.from == self.instance => {} // Our own, already applied.
            Ok(event) => room.events.do_send(RemoteRoomEvent {
                from: event.from,
                message: event.message,
            }),
            Err(e) => tracing::warn!(room = %msg.room, error = %e, "room bus: malformed event"),
        }
    }
}

impl Handler<Subscribed> for RoomBus {
    type Result = ();
    /// Every room resyncs: events may have been missed while unsubscribed.
    fn handle(&mut self, _: Subscribed, _: &mut Context<Self>) {
        tracing::info!(rooms = self.rooms.len(), "room bus subscribed");
        for room in self.rooms.values() {
            room.resync.do_send(Resync);
        }
    }
}
