//! Room events between signaling instances: one pub/sub channel per room, which every
//! instance subscribes to with one pattern (`participantJoined` / `participantLeft` /
//! `participantState`, wrapped with the sender's instance by the signaling node). Presence
//! events for outside listeners are a separate format and keyspace: [`crate::presence`].

use redis::AsyncCommands;

use super::store::{ClusterError, ClusterStore};

impl ClusterStore {
    /// Publish a room event to every signaling instance.
    pub async fn publish_room_event(&self, room: &str, payload: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        conn.publish::<_, _, ()>(self.room_events_channel(room), payload)
            .await?;
        Ok(())
    }

    /// The pattern matching every room event channel.
    pub fn room_events_pattern(&self) -> String {
        self.room_events_channel("*")
    }

    /// The room id of a room event channel.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.room_events_channel(""))
    }
}
