//! Renegotiation. The client offers once, at join; after that only the server offers (str0m
//! allows one pending offer per `Rtc`, and a client offer would cancel ours). Track changes
//! queue on each subscriber as `TrackOutState`s — a publisher's new track `ToOpen`, a leaver's
//! `ToStop` — and go out as one offer at a time; the subscriber's answer settles them.

use conclave_common::link::MediaEvent;
use conclave_common::protocol::{TrackInfo, TrackKind};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::RtcError;

use super::peer::{Peer, TrackIn, TrackOut, TrackOutState};
use super::rtc::{configure_send_stream, guarded, remove_send_stream};
use super::udp::PeerKey;

/// Queue a publisher's new track for every other peer (offered in their next renegotiation).
pub fn track_opened(peers: &mut [Peer], from: PeerKey, track: &TrackIn) {
    for other in peers.iter_mut().filter(|o| o.key != from) {
        other.tracks_out.push(TrackOut::to_open(from, track));
    }
}

/// Everything the room's peers already publish, for a newcomer to subscribe to.
pub fn tracks_for_newcomer(peers: &[Peer]) -> Vec<TrackOut> {
    peers
        .iter()
        .flat_map(|p| p.tracks_in.iter().map(|t| TrackOut::to_open(p.key, t)))
        .collect()
}

/// A publisher left: its tracks get stopped at every subscriber in their next offer.
pub fn publisher_left(peers: &mut [Peer], gone: PeerKey) {
    for other in peers.iter_mut() {
        other.tracks_out.retain_mut(|t| {
            if t.source_peer != gone {
                return true;
            }
            match t.state {
                TrackOutState::ToOpen => false,
                TrackOutState::Open(m) => {
                    t.state = TrackOutState::ToStop(m);
                    true
                }
                // The pending answer settles these; `offer_changes` stops them after.
                _ => true,
            }
        });
        other.dirty = true;
    }
}

/// Send a server offer to every peer with track changes and no offer in flight.
pub fn offer_changes(room: &str, peers: &mut [Peer]) {
    let owners: Vec<(PeerKey, String)> = peers
        .iter()
        .map(|p| (p.key, p.participant_id.clone()))
        .collect();
    for peer in peers.iter_mut().filter(|p| !p.dead && p.pending.is_none()) {
        let live = |k: PeerKey| owners.iter().any(|(o, _)| *o == k);
        // Tracks whose publisher left while their offer was in flight.
        for t in &mut peer.tracks_out {
            if let TrackOutState::Open(m) = t.state {
                if !live(t.source_peer) {
                    t.state = TrackOutState::ToStop(m);
                }
            }
        }
        let wanted = peer
            .tracks_out
            .iter()
            .any(|t| matches!(t.state, TrackOutState::ToOpen | TrackOutState::ToStop(_)));
        if !wanted {
            continue;
        }
        let tracks_out = &mut peer.tracks_out;
        let rtc = &mut peer.rtc;
        let applied = guarded(|| {
            let mut change = rtc.sdp_api();
            for t in tracks_out.iter_mut() {
                match t.state {
                    TrackOutState::ToOpen => {
                        let stream_id = owners
                            .iter()
                            .find(|(k, _)| *k == t.source_peer)
                            .map(|(_, pid)| pid.clone());
                        let mid =
                            change.add_media(t.kind, Direction::SendOnly, stream_id, None, None);
                        t.state = TrackOutState::Negotiating(mid);
                    }
                    TrackOutState::ToStop(m) => {
                        change.stop_media(m);
                        t.state = TrackOutState::NegotiatingStop(m);
                    }
                    _ => {}
                }
            }
            change.apply()
        });
        let Some(Some((offer, pending))) = applied else {
            if applied.is_none() {
                peer.dead = true;
            }
            continue;
        };
        peer.pending = Some(pending);
        let tracks = peer
            .tracks_out
            .iter()
            .filter_map(|t| {
                let mid = match t.state {
                    TrackOutState::Negotiating(m) | TrackOutState::Open(m) => m,
                    _ => return None,
                };
                let (_, owner) = owners.iter().find(|(k, _)| *k == t.source_peer)?;
                Some(track_info(mid, owner, t))
            })
            .collect();
        let event = MediaEvent::Offer {
            room: room.to_string(),
            participant_id: peer.participant_id.clone(),
            sdp: offer.to_sdp_string(),
            tracks,
        };
        peer.send_event(event.clone());
        peer.pending_event = Some(event);
        peer.dirty = true;
    }
}

/// Apply a subscriber's answer to our pending offer and settle its tracks: the offered ones
/// open (their send streams sized), the stopped ones go. `None` if str0m panicked; after an
/// error str0m has consumed the pending offer, so the peer cannot be renegotiated any more.
pub fn accept_answer(
    peer: &mut Peer,
    pending: SdpPendingOffer,
    answer: SdpAnswer,
) -> Option<Result<(), RtcError>> {
    let rtc = &mut peer.rtc;
    let accepted = guarded(|| rtc.sdp_api().accept_answer(pending, answer));
    if let Some(Ok(())) = accepted {
        for t in &mut peer.tracks_out {
            if let TrackOutState::Negotiating(m) = t.state {
                t.state = TrackOutState::Open(m);
                configure_send_stream(&mut peer.rtc, m, t.kind);
            }
        }
        // str0m keeps a stopped m-line's send stream (its cache, its sender reports) until
        // the m-line is reused; drop it now that both sides agree.
        for t in &peer.tracks_out {
            if let TrackOutState::NegotiatingStop(m) = t.state {
                remove_send_stream(&mut peer.rtc, m);
                peer.nacks_seen.retain(|(mid, _)| *mid != m);
            }
        }
        peer.tracks_out
            .retain(|t| !matches!(t.state, TrackOutState::NegotiatingStop(_)));
        peer.dirty = true;
    }
    accepted
}

/// How a forwarded track is announced to its subscriber (whose tile it is).
fn track_info(mid: Mid, owner: &str, track: &TrackOut) -> TrackInfo {
    TrackInfo {
        mid: mid.to_string(),
        stream_id: owner.to_string(),
        participant_id: owner.to_string(),
        kind: match track.kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        },
        source: track.source,
    }
}
