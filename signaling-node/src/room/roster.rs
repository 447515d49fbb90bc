//! Room membership and state, free of actors and I/O so it can be tested directly.

use conclave_common::caps::ParticipantCaps;
use conclave_common::load;
use std::collections::BTreeMap;

use conclave_common::protocol::{ParticipantInfo, ParticipantMedia, TrackSource};

use crate::error::{Refusal, RequestError};

/// Where a member's media connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPhase {
    /// No offer yet (or the last one failed): an `offer` is allowed.
    NoPeer,
    /// Offer sent to the media node, answer pending.
    Offered,
    /// The media node answered: the peer exists.
    Active,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub info: ParticipantInfo,
    pub media: MediaPhase,
    /// Its session lives on another signaling instance (cluster mode); we only mirror it.
    pub remote: bool,
    /// ICE candidates relayed for its current peer (capped; a new offer starts again).
    pub candidates: u32,
    /// What its own m-lines carry, by mid, as it declared (`setSources`).
    pub sources: BTreeMap<String, TrackSource>,
}

/// What a remote member's record changed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    Added,
    StateChanged,
    Unchanged,
}

/// The members of one room, in join order.
#[derive(Debug)]
pub struct Roster {
    cap: usize,
    members: Vec<Member>,
}

impl Roster {
    pub fn new(cap: usize) -> Self {
        Roster {
            cap,
            members: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, participant_id: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.info.participant_id == participant_id)
    }

    fn get_mut(&mut self, participant_id: &str) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.info.participant_id == participant_id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.info.participant_id.as_str())
    }

    /// Add a member; returns the roster of the others as they are now.
    pub fn join(
        &mut self,
        room: &str,
        info: ParticipantInfo,
    ) -> Result<Vec<ParticipantInfo>, Refusal> {
        if self.get(&info.participant_id).is_some() {
            return Err(Refusal::AlreadyJoined);
        }
        if self.members.len() >= self.cap {
            return Err(Refusal::RoomFull {
                room: room.to_string(),
                cap: self.cap,
            });
        }
        let others = self.members.iter().map(|m| m.info.clone()).collect();
        self.members.push(Member {
            info,
            media: MediaPhase::NoPeer,
            remote: false,
            candidates: 0,
            sources: BTreeMap::new(),
        });
        Ok(others)
    }

    /// Mirror a member whose session is on another signaling instance. A member of ours is
    /// left alone (we own its record).
    /// Participant ids of `user_id`'s members (one seat per user: at most one, unless a
    /// join is replacing it right now).
    pub fn seats_of(&self, user_id: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.info.user_id == user_id)
            .map(|m| m.info.participant_id.clone())
            .collect()
    }

    pub fn upsert_remote(&mut self, info: ParticipantInfo) -> RemoteChange {
        match self.get_mut(&info.participant_id) {
            Some(m) if !m.remote => RemoteChange::Unchanged,
            Some(m) if visible_state(&m.info) != visible_state(&info) => {
                m.info = info;
                RemoteChange::StateChanged
            }
            Some(_) => RemoteChange::Unchanged,
            None => {
                self.members.push(Member {
                    info,
                    media: MediaPhase::NoPeer,
                    remote: true,
                    candidates: 0,
                    sources: BTreeMap::new(),
                });
                RemoteChange::Added
            }
        }
    }

    /// The member's session moved to this instance (`false`) or away from it (`true`).
    pub fn set_remote(&mut self, participant_id: &str, remote: bool) {
        if let Some(m) = self.get_mut(participant_id) {
            m.remote = remote;
        }
    }

    /// Members whose session is on another instance.
    pub fn remote_ids(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.remote)
            .map(|m| m.info.participant_id.clone())
            .collect()
    }

    /// Whether any member's session is on this instance.
    pub fn has_local(&self) -> bool {
        self.members.iter().any(|m| !m.remote)
    }

    /// Everyone but `participant_id`, as the roster of a `joined`.
    pub fn others(&self, participant_id: &str) -> Vec<ParticipantInfo> {
        self.members
            .iter()
            .filter(|m| m.info.participant_id != participant_id)
            .map(|m| m.info.clone())
            .collect()
    }

    pub fn leave(&mut self, participant_id: &str) -> Option<Member> {
        let i = self
            .members
            .iter()
            .position(|m| m.info.participant_id == participant_id)?;
        Some(self.members.remove(i))
    }

    /// Set microphone, camera and/or deafened state (`None` keeps one as it is). Returns the
    /// new state if it changed.
    pub fn set_state(
        &mut self,
        participant_id: &str,
        audio: Option<bool>,
        video: Option<bool>,
        deafened: Option<bool>,
    ) -> Option<ParticipantInfo> {
        let m = self.get_mut(participant_id)?;
        let before = visible_state(&m.info);
        m.info.audio = audio.unwrap_or(m.info.audio);
        m.info.video = video.unwrap_or(m.info.video);
        m.info.deafened = deafened.unwrap_or(m.info.deafened);
        (before != visible_state(&m.info)).then(|| m.info.clone())
    }

    /// Set the media connection state everyone sees. Returns the new state if it changed.
    pub fn set_media_state(
        &mut self,
        participant_id: &str,
        media: ParticipantMedia,
    ) -> Option<ParticipantInfo> {
        let m = self.get_mut(participant_id)?;
        (m.info.media != Some(media)).then(|| {
            m.info.media = Some(media);
            m.info.clone()
        })
    }

    /// The member sends its one offer: allowed only without a peer.
    pub fn begin_offer(&mut self, participant_id: &str) -> Result<(), RequestError> {
        let m = self
            .get_mut(participant_id)
            .ok_or(RequestError::NotMember)?;
        if m.media != MediaPhase::NoPeer {
            return Err(RequestError::OfferAlreadySent);
        }
        m.media = MediaPhase::Offered;
        m.candidates = 0;
        Ok(())
    }

    /// The member declares what its m-lines carry (`setSources`), for its offers from now.
    pub fn set_sources(&mut self, participant_id: &str, sources: BTreeMap<String, TrackSource>) {
        if let Some(m) = self.get_mut(participant_id) {
            m.sources = sources;
        }
    }

    /// One more trickled candidate for the member's peer, if it is under the cap.
    pub fn take_candidate(
        &mut self,
        participant_id: &str,
        caps: &ParticipantCaps,
    ) -> Result<(), RequestError> {
        let m = self
            .get_mut(participant_id)
            .ok_or(RequestError::NotMember)?;
        caps.check_candidate(m.candidates)?;
        m.candidates += 1;
        Ok(())
    }

    pub fn set_media(&mut self, participant_id: &str, phase: MediaPhase) {
        if let Some(m) = self.get_mut(participant_id) {
            m.media = phase;
        }
    }

    /// What `participant_id`'s new peer adds to the media node's load, in forwarded packets
    /// per second (`load::join_cost`): what it publishes goes to each other member whose media
    /// is on the node, and what each of them publishes comes to it. A member of ours without a
    /// peer is left out: it counts this one when it offers, so after a move, when every member
    /// offers again one by one, the room is counted once. Members of other instances are
    /// counted (their peers are there as far as we know).
    pub fn peer_cost(&self, participant_id: &str) -> u64 {
        let Some(newcomer) = self.get(participant_id) else {
            return 0;
        };
        let others: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.info.participant_id != participant_id)
            .filter(|m| m.remote || m.media != MediaPhase::NoPeer)
            .map(publishes)
            .collect();
        load::join_cost(publishes(newcomer), &others)
    }

    /// Every member loses its peer (the media node went away).
    pub fn reset_media(&mut self) {
        // Remote members have no peer of ours; resetting them is harmless.
        for m in &mut self.members {
            m.media = MediaPhase::NoPeer;
        }
    }
}

/// The states of a member that everyone sees (`participantState`).
fn visible_state(info: &ParticipantInfo) -> (bool, bool, bool, Option<ParticipantMedia>) {
    (info.audio, info.video, info.deafened, info.media)
}

/// Packets per second a member publishes, from its microphone and camera state (camera off:
/// audio only).
fn publishes(member: &Member) -> u64 {
    load::publisher_fpps(member.info.audio as u64, member.info.video as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_common::protocol::ErrorCode;

    fn p(id: &str) -> ParticipantInfo {
        ParticipantInfo {
            participant_id: id.into(),
            user_id: format!("user-{id}"),
            name: id.to_uppercase(),
            audio: true,
            video: true,
            deafened: false,
            media: Some(ParticipantMedia::Connecting),
        }
    }

    #[test]
    fn join_returns_the_others_and_respects_the_cap() {
        let mut r = Roster::new(2);
        assert!(r.join("g", p("a")).unwrap().is_empty());
        let others = r.join("g", p("b")).unwrap();
        assert_eq!(others, vec![p("a")]);
        let full = r.join("g", p("c")).unwrap_err();
        assert_eq!(full.code(), ErrorCode::RoomFull);
        assert!(full.to_string().contains("full"));
        assert_eq!(r.len(), 2);
        // A place frees up when someone leaves.
        assert!(r.leave("a").is_some());
        assert_eq!(r.join("g", p("c")).unwrap(), vec![p("b")]);
    }

    #[test]
    fn the_same_participant_cannot_join_twice() {
        let mut r = Roster::new(5);
        r.join("g", p("a")).unwrap();
        assert_eq!(
            r.join("g", p("a")).unwrap_err().code(),
            ErrorCode::AlreadyJoined
        );
    }

    #[test]
    fn state_changes_are_reported_once() {
        let mut r = Roster::new(5);
        r.join("g", p("a")).unwrap();
        let changed = r.set_state("a", None, Some(false), None).unwrap();
        assert!(changed.audio && !changed.video);
        assert!(r.set_state("a", None, Some(false), None).is_none());
        assert!(r.set_state("a", Some(true), None, None).is_none());
        assert!(r.set_state("zz", Some(false), None, None).is_none());
        let roster_view = r.get("a").unwrap().info.clone();
        assert!(!roster_view.video);
        // Deafening is a state change of its own, reported once, and leaves the rest alone.
        let deaf = r.set_state("a", None, None, Some(true)).unwrap();
        assert!(deaf.deafened && deaf.audio && !deaf.video);
        assert!(r.set_state("a", None, None, Some(true)).is_none());
    }

    #[test]
    fn a_mirrored_member_that_deafens_is_a_state_change() {
        let mut r = Roster::new(5);
        assert_eq!(r.upsert_remote(p("m")), RemoteChange::Added);
        assert_eq!(r.upsert_remote(p("m")), RemoteChange::Unchanged);
        let mut deaf = p("m");
        deaf.deafened = true;
        assert_eq!(r.upsert_remote(deaf), RemoteChange::StateChanged);
        assert!(r.get("m").unwrap().info.deafened);
    }

    #[test]
    fn one_offer_per_peer_until_it_fails() {
        let mut r = Roster::new(5);
        r.join("g", p("a")).unwrap();
        r.begin_offer("a").unwrap();
        assert_eq!(
            r.begin_offer("a").unwrap_err().code(),
            ErrorCode::InvalidState
        );
        r.set_media("a", MediaPhase::NoPeer); // the media node refused the offer
        r.begin_offer("a").unwrap();
        r.set_media("a", MediaPhase::Active);
        r.reset_media();
        r.begin_offer("a").unwrap();
        assert_eq!(r.begin_offer("x").unwrap_err().code(), ErrorCode::NotJoined);
    }

    #[test]
    fn candidates_are_capped_per_peer_and_counted_again_for_a_new_offer() {
        let caps = ParticipantCaps {
            max_remote_candidates: 3,
            ..ParticipantCaps::default()
        };
        let mut r = Roster::new(5);
        r.join("g", p("a")).unwrap();
        r.begin_offer("a").unwrap();
        for _ in 0..3 {
            r.take_candidate("a", &caps).unwrap();
        }
        let e = r.take_candidate("a", &caps).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooManyCandidates);
        assert_eq!(r.get("a").unwrap().candidates, 3);
        // The peer failed; a new offer is a new peer with its own candidates.
        r.set_media("a", MediaPhase::NoPeer);
        r.begin_offer("a").unwrap();
        r.take_candidate("a", &caps).unwrap();
        assert_eq!(
            r.take_candidate("zz", &caps).unwrap_err().code(),
            ErrorCode::NotJoined
        );
    }

    #[test]
    fn remote_members_are_mirrored_and_ours_are_not_overwritten() {
        let mut r = Roster::new(5);
        r.join("g", p("a")).unwrap();
        assert_eq!(r.upsert_remote(p("b")), RemoteChange::Added);
        assert_eq!(r.upsert_remote(p("b")), RemoteChange::Unchanged);
        let mut muted = p("b");
        muted.audio = false;
        assert_eq!(r.upsert_remote(muted), RemoteChange::StateChanged);
        assert!(!r.get("b").unwrap().info.audio);
        // A remote view of our own member changes nothing.
        let mut ours = p("a");
        ours.video = false;
        assert_eq!(r.upsert_remote(ours), RemoteChange::Unchanged);
        assert!(r.get("a").unwrap().info.video);
        assert_eq!(r.remote_ids(), vec!["b".to_string()]);
        assert_eq!(r.others("a"), vec![r.get("b").unwrap().info.clone()]);
        assert!(r.has_local());
        r.set_remote("a", true);
        assert!(!r.has_local());
    }

    #[test]
    fn a_peer_costs_what_it_sends_to_the_others_and_what_they_send_it() {
        let mut r = Roster::new(10);
        for id in ["a", "b"] {
            r.join("g", p(id)).unwrap();
            r.begin_offer(id).unwrap();
        }
        r.set_media("a", MediaPhase::Active);
        // The third into a 2-person video room: 110 to each of 2, and 2 × 110 to it.
        r.join("g", p("c")).unwrap();
        r.begin_offer("c").unwrap();
        assert_eq!(r.peer_cost("c"), 110 * 2 + 220);
        // Camera off: audio only (50). d, audio only, into a room of three on video.
        r.join("g", p("d")).unwrap();
        r.set_state("d", None, Some(false), None);
        r.begin_offer("d").unwrap();
        assert_eq!(r.peer_cost("d"), 50 * 3 + 330);
        // A member of another instance counts; one of ours that has not offered does not
        // (it counts the others when it offers).
        r.upsert_remote(p("e"));
        r.join("g", p("f")).unwrap();
        let mut g = p("g");
        g.audio = false;
        g.video = false;
        r.join("g", g).unwrap();
        r.begin_offer("g").unwrap();
        // g publishes nothing; it receives a, b, c (110 each), d (50) and e (110).
        assert_eq!(r.peer_cost("g"), 4 * 110 + 50);
        assert_eq!(r.peer_cost("nobody"), 0);
    }

    #[test]
    fn after_a_move_the_room_is_counted_once_whatever_the_order_of_offers() {
        let mut r = Roster::new(5);
        let mut d = p("d");
        d.video = false;
        for info in [p("a"), p("b"), p("c"), d] {
            r.join("g", info).unwrap();
        }
        // Everyone offers again on the new node, in some order.
        let mut total = 0;
        for id in ["c", "a", "d", "b"] {
            r.begin_offer(id).unwrap();
            total += r.peer_cost(id);
        }
        assert_eq!(total, load::room_cost(&[110, 110, 110, 50]));
    }

    #[test]
    fn leave_of_a_stranger_changes_nothing() {
        let mut r = Roster::new(5);
        r.join("g", p("a")).unwrap();
        assert!(r.leave("b").is_none());
        assert_eq!(r.ids().collect::<Vec<_>>(), vec!["a"]);
        assert!(r.leave("a").is_some());
        assert!(r.is_empty());
    }
}
