//! Who is speaking, from the audio level (RFC 6464) each publisher's browser writes on every
//! audio packet: no decoding. Per publisher a [`SpeechDetector`] (debounced: a word starts it,
//! a pause of under a second does not end it); per room the [`Speakers`] it adds up to, with a
//! dominant speaker that does not flicker. Pure and tested below; `room.rs` runs them.

use std::time::{Duration, Instant};

/// A packet at least this loud (dBov, 0 the loudest, -127 silence) counts as voice. Speech
/// into a laptop microphone is about -20 to -40, a quiet room about -60 and below; a muted
/// (disabled) microphone sends -127.
const VOICE_DBOV: i8 = -45;
/// Of the last 16 packets (320 ms at one per 20 ms), this many voiced start speaking.
const START_VOICED: u32 = 6;
/// Speaking ends after this long without a voiced packet (a pause between words does not).
const STOP_AFTER: Duration = Duration::from_millis(800);
/// Loudness is averaged over about this many voiced packets (exponentially).
const LOUDNESS_PACKETS: f32 = 25.0;
/// Another speaker takes the dominant place from one still speaking only if this much louder
/// (dB, averaged), so two people talking at once do not make it flicker.
const DOMINANT_MARGIN_DB: f32 = 6.0;

/// One publisher's microphone.
#[derive(Debug, Clone, Default)]
pub struct SpeechDetector {
    /// The last 16 packets, newest in bit 0: voiced or not.
    recent: u16,
    last_voiced: Option<Instant>,
    speaking: bool,
    /// Average level of voiced packets, dBov (exponential).
    loudness: f32,
}

impl SpeechDetector {
    /// One audio packet with its level (`None`: the browser sent none; counts as quiet).
    pub fn packet(&mut self, dbov: Option<i8>, now: Instant) {
        let voiced = dbov.is_some_and(|l| l >= VOICE_DBOV);
        self.recent = (self.recent << 1) | u16::from(voiced);
        if voiced {
            self.last_voiced = Some(now);
            let level = f32::from(dbov.unwrap_or(-127));
            self.loudness = if self.loudness == 0.0 {
                level
            } else {
                self.loudness + (level - self.loudness) / LOUDNESS_PACKETS
            };
        }
        if self.recent.count_ones() >= START_VOICED {
            self.speaking = true;
        }
        self.settle(now);
    }

    /// Whether it is speaking `now` (ends `STOP_AFTER` after the last voiced packet, also
    /// when packets stop coming: a muted or closed microphone).
    pub fn settle(&mut self, now: Instant) -> bool {
        if self.speaking
            && self
                .last_voiced
                .is_none_or(|t| now.saturating_duration_since(t) >= STOP_AFTER)
        {
            self.speaking = false;
            self.recent = 0;
        }
        self.speaking
    }

    pub fn loudness(&self) -> f32 {
        self.loudness
    }
}

/// Who speaks in a room, and the dominant speaker: the loudest one speaking, kept while it
/// speaks unless another is clearly louder; the last one stays dominant through silence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Speakers<K> {
    pub speaking: Vec<K>,
    pub dominant: Option<K>,
}

impl<K: Clone + PartialEq> Speakers<K> {
    /// The room's speakers now, from each publisher's (key, speaking, loudness), after `self`.
    pub fn next(&self, publishers: &[(K, bool, f32)]) -> Speakers<K> {
        let speaking: Vec<&(K, bool, f32)> = publishers.iter().filter(|p| p.1).collect();
        let loudest = speaking
            .iter()
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .map(|p| (&p.0, p.2));
        let current = speaking
            .iter()
            .find(|p| Some(&p.0) == self.dominant.as_ref())
            .map(|p| p.2);
        let dominant = match (loudest, current) {
            (Some((k, level)), Some(cur)) if level > cur + DOMINANT_MARGIN_DB => Some(k.clone()),
            (_, Some(_)) => self.dominant.clone(),
            (Some((k, _)), None) => Some(k.clone()),
            // Nobody speaks: the last one stays, if still in the room.
            (None, None) => self
                .dominant
                .clone()
                .filter(|d| publishers.iter().any(|p| &p.0 == d)),
        };
        Speakers {
            speaking: speaking.iter().map(|p| p.0.clone()).collect(),
            dominant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: Duration = Duration::from_millis(20);

    /// Feed `n` packets at `dbov`, one per 20 ms from `*t`; the state after each.
    fn feed(d: &mut SpeechDetector, t: &mut Instant, n: usize, dbov: Option<i8>) -> Vec<bool> {
        (0..n)
            .map(|_| {
                *t += PACKET;
                d.packet(dbov, *t);
                d.settle(*t)
            })
            .collect()
    }

    #[test]
    fn speech_starts_after_a_few_voiced_packets_and_survives_short_pauses() {
        let mut d = SpeechDetector::default();
        let mut t = Instant::now();
        assert!(!feed(&mut d, &mut t, 50, Some(-127)).contains(&true));
        assert!(
            !feed(&mut d, &mut t, 50, Some(-70)).contains(&true),
            "background noise"
        );
        let talking = feed(&mut d, &mut t, 10, Some(-25));
        assert_eq!(
            talking.iter().position(|s| *s),
            Some(START_VOICED as usize - 1)
        );
        // A 400 ms pause between words: still speaking.
        assert!(feed(&mut d, &mut t, 20, Some(-127)).iter().all(|s| *s));
        assert!(feed(&mut d, &mut t, 5, Some(-30)).iter().all(|s| *s));
        // A second of silence ends it.
        let pause = feed(&mut d, &mut t, 50, Some(-127));
        let stopped = pause.iter().position(|s| !*s).unwrap();
        assert_eq!(stopped, STOP_AFTER.as_millis() as usize / 20 - 1);
        assert!(!pause[stopped..].contains(&true));
    }

    #[test]
    fn a_microphone_that_goes_quiet_or_sends_no_levels_stops_speaking() {
        let mut d = SpeechDetector::default();
        let mut t = Instant::now();
        feed(&mut d, &mut t, 20, Some(-10));
        assert!(d.settle(t));
        // No packets at all (muted with DTX, or closed): the room's tick ends it.
        assert!(d.settle(t + Duration::from_millis(500)));
        assert!(!d.settle(t + STOP_AFTER));
        // Packets without a level never start it.
        let mut quiet = SpeechDetector::default();
        assert!(!feed(&mut quiet, &mut t, 50, None).contains(&true));
    }

    #[test]
    fn scattered_clicks_do_not_start_speech() {
        let mut d = SpeechDetector::default();
        let mut t = Instant::now();
        for _ in 0..20 {
            feed(&mut d, &mut t, 1, Some(-20));
            assert!(!feed(&mut d, &mut t, 4, Some(-127)).contains(&true));
        }
    }

    #[test]
    fn the_dominant_speaker_is_the_loudest_and_does_not_flicker() {
        let none: Speakers<&str> = Speakers::default();
        let s = none.next(&[("a", true, -30.0), ("b", true, -20.0), ("c", false, 0.0)]);
        assert_eq!(s.speaking, ["a", "b"]);
        assert_eq!(s.dominant, Some("b"));
        // a gets a little louder than b: b stays dominant while it speaks.
        let s = s.next(&[("a", true, -18.0), ("b", true, -20.0)]);
        assert_eq!(s.dominant, Some("b"));
        // a clearly louder: a takes over.
        let s = s.next(&[("a", true, -10.0), ("b", true, -20.0)]);
        assert_eq!(s.dominant, Some("a"));
        // a stops, b speaks: b.
        let s = s.next(&[("a", false, -10.0), ("b", true, -20.0)]);
        assert_eq!((s.speaking.clone(), s.dominant), (vec!["b"], Some("b")));
        // Silence: b stays dominant; b leaves: nobody.
        let s = s.next(&[("a", false, -10.0), ("b", false, -20.0)]);
        assert_eq!((s.speaking.len(), s.dominant), (0, Some("b")));
        let s = s.next(&[("a", false, -10.0)]);
        assert_eq!(s.dominant, None);
    }
}
