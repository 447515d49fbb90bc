//! The load model: what media costs a media node, in **forwarded packets per second** (fpps),
//! the unit of a node's load, its capacity and every placement reservation.
//!
//! A node measures its load (the RTP packets it forwards to subscribers per second, over the
//! last few seconds) and publishes it in its heartbeat with a capacity in the same unit. Until
//! a new participant's media shows in the measurement, its modelled cost stands in for it:
//! each publisher sends [`publisher_fpps`] to every other participant of its room, so a room of
//! `n` all-video participants costs `n × (n − 1) × 110` fpps — the square of the room's size,
//! which counting participants misses.

/// Packets per second of one published audio track (Opus, 20 ms frames).
pub const AUDIO_PPS: u64 = 50;
/// Packets per second of one published camera track (≈ 500 kbit/s VP8 in ≈ 1 KB packets at
/// 30 frames per second).
pub const VIDEO_PPS: u64 = 60;
/// Default capacity of one room thread in fpps: what one core of a small cloud VM forwards
/// with headroom for bursts, handshakes and RTCP (docs/cluster.md, "Sizing media nodes").
pub const DEFAULT_FPPS_PER_THREAD: u64 = 50_000;
/// How long a new participant's modelled cost is held on top of the measured load: long
/// enough for its media to connect (ICE, DTLS) and show in the measurement window.
pub const RAMP_SECS: u64 = 5;

/// Packets per second a participant publishes.
pub fn publisher_fpps(audio_tracks: u64, video_tracks: u64) -> u64 {
    audio_tracks * AUDIO_PPS + video_tracks * VIDEO_PPS
}

/// What one participant joining a room adds: what it publishes goes to everyone already
/// there, and what each of them publishes goes to it.
pub fn join_cost(newcomer_fpps: u64, others_fpps: &[u64]) -> u64 {
    newcomer_fpps * others_fpps.len() as u64 + others_fpps.iter().sum::<u64>()
}

/// What a room costs in steady state: every publisher to every other participant.
pub fn room_cost(participants_fpps: &[u64]) -> u64 {
    let total: u64 = participants_fpps.iter().sum();
    let subscribers = participants_fpps.len().saturating_sub(1) as u64;
    total * subscribers
}

/// What placing a new room reserves on its node (and what a room thread reserves for a new
/// room): a two-person call of audio and video publishers. Its first participant alone costs
/// nothing, but a room is placed to be joined; reserving nothing would send rooms placed back
/// to back all to one node.
pub fn new_room_reservation() -> u64 {
    let full = publisher_fpps(1, 1);
    room_cost(&[full, full])
}

/// Capacity of a node with `threads` room threads, unless the operator sets one.
pub fn default_capacity(threads: usize) -> u64 {
    threads.max(1) as u64 * DEFAULT_FPPS_PER_THREAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_costs_the_sum_of_its_joins() {
        let full = publisher_fpps(1, 1);
        let audio = publisher_fpps(1, 0);
        let room = [full, audio, full, full];
        let mut joined = Vec::new();
        let mut sum = 0;
        for p in room {
            sum += join_cost(p, &joined);
            joined.push(p);
        }
        assert_eq!(sum, room_cost(&room));
        // 3 video publishers at 110 and one audio-only at 50, each to 3 others.
        assert_eq!(room_cost(&room), (3 * 110 + 50) * 3);
    }

    #[test]
    fn cost_grows_with_the_square_of_the_room() {
        let full = publisher_fpps(1, 1);
        let four = room_cost(&[full; 4]);
        let twenty_five = room_cost(&[full; 25]);
        assert_eq!(four, 12 * 110);
        assert_eq!(twenty_five, 600 * 110);
        assert_eq!(twenty_five / four, 50);
        assert_eq!(new_room_reservation(), 220);
    }
}
