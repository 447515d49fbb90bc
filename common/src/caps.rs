//! Caps on what one participant creates: the size of its SDP, the m-lines of its offer, the
//! tracks it publishes and the ICE candidates it trickles. Checked at the signaling node
//! (before anything reaches the link) and again at the media node (the link is a second way
//! in); both use the checks here, so they agree.
//!
//! The checks that run before an SDP is parsed are cheap scans of the text: the size is a
//! length, the m-lines are counted line by line. An offer with thousands of m-lines never
//! reaches the media node, where it would make every subscriber's offer grow past the link's
//! frame limit.

use crate::protocol::ErrorCode;

/// Default largest SDP (offer or answer) in bytes. An answer is as large as the server offer
/// it answers, and that offer holds one m-line per track the participant ever received: in a
/// full room (25) where everyone shares a screen too, 24 × 4 m-lines of ≈ 0.7–0.9 KB each in
/// Chromium's answer (measured), ≈ 82 KB with its own m-lines. 120 KiB leaves ≈ 40 KB for the
/// stopped m-lines of people who came and went, and keeps the JSON message (SDP escaping adds
/// ≈ 5 %) under 128 KiB, the most Chromium ever sends as one WebSocket frame.
pub const DEFAULT_MAX_SDP_BYTES: u32 = 120 * 1024;
/// Default most m-lines in a client's offer. The negotiation model has the client offer its
/// own sending m-lines only: microphone and camera today, and a screen share's video and audio
/// (issue 13) reserved in the same offer: 4.
pub const DEFAULT_MAX_OFFER_M_LINES: u32 = 4;
/// Default most tracks one participant publishes: the same four sources.
pub const DEFAULT_MAX_TRACKS: u32 = 4;
/// Default most remote ICE candidates one peer may trickle. A browser gathers a host
/// candidate per interface address and transport, plus one per STUN/TURN server and
/// transport: a handful, a few dozen on a machine with many interfaces.
pub const DEFAULT_MAX_REMOTE_CANDIDATES: u32 = 64;

/// The caps, as configured (see the nodes' `--max-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantCaps {
    /// Largest offer or answer, in bytes.
    pub max_sdp_bytes: u32,
    /// Most m-lines in a client's offer.
    pub max_offer_m_lines: u32,
    /// Most tracks a participant publishes.
    pub max_tracks: u32,
    /// Most remote candidates trickled per peer.
    pub max_remote_candidates: u32,
}

impl Default for ParticipantCaps {
    fn default() -> Self {
        ParticipantCaps {
            max_sdp_bytes: DEFAULT_MAX_SDP_BYTES,
            max_offer_m_lines: DEFAULT_MAX_OFFER_M_LINES,
            max_tracks: DEFAULT_MAX_TRACKS,
            max_remote_candidates: DEFAULT_MAX_REMOTE_CANDIDATES,
        }
    }
}

/// A cap a participant's request went over. The message names the cap, never internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    #[error("sdp of {size} bytes is over the limit of {limit} bytes")]
    SdpTooLarge { size: usize, limit: u32 },
    #[error("offer has more than {limit} m-lines (one per track this client sends)")]
    TooManyMLines { limit: u32 },
    #[error("offer publishes {count} tracks; at most {limit} per participant")]
    TooManyTracks { count: usize, limit: u32 },
    #[error("more than {limit} ice candidates for this peer")]
    TooManyCandidates { limit: u32 },
}

impl CapExceeded {
    /// The wire code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            CapExceeded::SdpTooLarge { .. } => ErrorCode::SdpTooLarge,
            CapExceeded::TooManyMLines { .. } => ErrorCode::TooManyMLines,
            CapExceeded::TooManyTracks { .. } => ErrorCode::TooManyTracks,
            CapExceeded::TooManyCandidates { .. } => ErrorCode::TooManyCandidates,
        }
    }
}

impl ParticipantCaps {
    /// A client's offer, before it is parsed: its size, then its m-lines.
    pub fn check_offer(&self, sdp: &str) -> Result<(), CapExceeded> {
        self.check_size(sdp)?;
        let limit = self.max_offer_m_lines;
        if count_m_lines(sdp, limit as usize + 1) > limit as usize {
            return Err(CapExceeded::TooManyMLines { limit });
        }
        Ok(())
    }

    /// A client's answer, before it is parsed: its size. (Its m-lines are those of the
    /// server's offer, which the media node checks when it applies the answer.)
    pub fn check_answer(&self, sdp: &str) -> Result<(), CapExceeded> {
        self.check_size(sdp)
    }

    /// The tracks an offer publishes, once parsed.
    pub fn check_tracks(&self, count: usize) -> Result<(), CapExceeded> {
        let limit = self.max_tracks;
        if count > limit as usize {
            return Err(CapExceeded::TooManyTracks { count, limit });
        }
        Ok(())
    }

    /// One more remote candidate for a peer that has `so_far` already.
    pub fn check_candidate(&self, so_far: u32) -> Result<(), CapExceeded> {
        let limit = self.max_remote_candidates;
        if so_far >= limit {
            return Err(CapExceeded::TooManyCandidates { limit });
        }
        Ok(())
    }

    fn check_size(&self, sdp: &str) -> Result<(), CapExceeded> {
        if sdp.len() > self.max_sdp_bytes as usize {
            return Err(CapExceeded::SdpTooLarge {
                size: sdp.len(),
                limit: self.max_sdp_bytes,
            });
        }
        Ok(())
    }
}

/// The m-lines (media sections) of `sdp`, counted up to `stop_at`: lines starting with `m=`.
/// A line starts at the beginning of the text or after any `\r` or `\n`: a superset of the
/// line ends SDP parsers accept (`\r\n`, a bare `\n`, a bare `\r`), so no spelling of the line
/// ends hides an m-line from the count. Linear in the text, no allocation.
pub fn count_m_lines(sdp: &str, stop_at: usize) -> usize {
    let bytes = sdp.as_bytes();
    let mut count = 0;
    let mut at_line_start = true;
    for (i, &b) in bytes.iter().enumerate() {
        if count >= stop_at {
            break;
        }
        if at_line_start && b == b'm' && bytes.get(i + 1) == Some(&b'=') {
            count += 1;
        }
        at_line_start = b == b'\r' || b == b'\n';
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n";

    #[test]
    fn m_lines_are_counted_at_line_starts_only() {
        assert_eq!(count_m_lines(OFFER, usize::MAX), 2);
        assert_eq!(count_m_lines("m=audio\nm=video\rm=x", usize::MAX), 3);
        // Not at a line start, or not followed by `=`.
        assert_eq!(
            count_m_lines("a=x m=audio\r\nmm=video\r\nm\r\n", usize::MAX),
            0
        );
        assert_eq!(count_m_lines("", usize::MAX), 0);
        assert_eq!(count_m_lines("m", usize::MAX), 0);
        // Counting stops at `stop_at`.
        assert_eq!(count_m_lines(&"m=audio\n".repeat(10_000), 5), 5);
    }

    #[test]
    fn an_offer_is_checked_for_size_then_m_lines() {
        let caps = ParticipantCaps {
            max_sdp_bytes: 1000,
            max_offer_m_lines: 2,
            ..ParticipantCaps::default()
        };
        assert_eq!(caps.check_offer(OFFER), Ok(()));
        let three = format!("{OFFER}m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        let e = caps.check_offer(&three).unwrap_err();
        assert_eq!(e, CapExceeded::TooManyMLines { limit: 2 });
        assert_eq!(e.code().as_str(), "too_many_m_lines");
        let big = format!("{OFFER}{}", "a=x\r\n".repeat(200));
        let e = caps.check_offer(&big).unwrap_err();
        assert_eq!(e.code().as_str(), "sdp_too_large");
        assert!(e.to_string().contains("1000"), "{e}");
        // An answer's m-lines are not the client's choice: only its size is checked.
        assert_eq!(caps.check_answer(&three), Ok(()));
        assert!(caps.check_answer(&big).is_err());
    }

    #[test]
    fn tracks_and_candidates_have_their_caps() {
        let caps = ParticipantCaps::default();
        assert_eq!(caps.check_tracks(4), Ok(()));
        assert_eq!(
            caps.check_tracks(5).unwrap_err().code().as_str(),
            "too_many_tracks"
        );
        assert_eq!(caps.check_candidate(63), Ok(()));
        let e = caps.check_candidate(64).unwrap_err();
        assert_eq!(e.code().as_str(), "too_many_candidates");
    }
}
