//! str0m set-up, the same for every participant: the `RtcConfig`, building a peer's `Rtc` from
//! its offer, sizing and dropping its send streams, and the panic guard around every call into
//! str0m (a panic inside one `Rtc` costs that peer, never the room or the node).

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};

/// At most this many packets kept per outgoing video stream for retransmission. str0m's
/// default (1000) costs ≈ 1.2 MB per subscribed stream, times every subscription; 64 packets
/// is ≈ 1 s of 500 kbps video, ≈ 230 ms of 2.5 Mbps. See also `RTX_MAX_AGE`.
const SEND_BUFFER_VIDEO: usize = 64;
/// Audio is not retransmitted (browsers do not NACK Opus); the buffer only stages packets.
const SEND_BUFFER_AUDIO: usize = 8;
/// Packets older than this are not kept for retransmission (str0m's default: 3 s), so a
/// low-bitrate stream's cache stays small (see `configure_send_stream`). A NACK comes about
/// one round trip after the loss and is repeated every round trip: 500 ms answers NACKs over
/// round trips up to ≈ 400 ms (Janus keeps round trip + 100 ms, within 200 ms..1 s).
const RTX_MAX_AGE: Duration = Duration::from_millis(500);
/// str0m's default: stop resending when resends exceed this share of the bytes sent.
const RTX_RATIO_CAP: f32 = 0.15;
/// How often str0m reports RTT, loss and jitter (off by default; our metrics need it).
const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// A new subscriber's bandwidth estimate before any feedback (str0m probes up from here):
/// audio and a few small or one mid-sized video.
const INITIAL_ESTIMATE_BPS: u64 = 600_000;

/// Opus's payload type (the one browsers use).
const OPUS_PT: u8 = 111;

/// How every participant's `Rtc` is configured (also used by the benchmarks, so they
/// measure what runs).
pub fn rtc_config() -> RtcConfig {
    let mut config = RtcConfig::new()
        // The browser always has a route to us, we need not probe it: ICE-lite.
        .set_ice_lite(true)
        .clear_codecs();
    // Opus as str0m enables it (in-band FEC: a lost packet is rebuilt from the next one),
    // plus DTX: a muted or silent microphone sends one packet every 400 ms instead of 50 a
    // second, to us and from us to every subscriber (a voice channel is mostly silence).
    config.codec_config().add_config(
        Pt::new_with_value(OPUS_PT),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: Some(true),
            ..FormatParams::default()
        },
    );
    config
        .enable_vp8(true)
        .set_rtp_mode(true)
        .set_send_buffer_video(SEND_BUFFER_VIDEO)
        .set_send_buffer_audio(SEND_BUFFER_AUDIO)
        .set_stats_interval(Some(STATS_INTERVAL))
}

/// A new participant's `Rtc` and our answer to its offer: our ICE credentials (their ufrag
/// routes its STUN), our advertised address as the only candidate. `None` if str0m panicked;
/// the error text says why the offer was refused.
pub fn answer_offer(
    offer: SdpOffer,
    creds: IceCreds,
    advertised: SocketAddr,
    bwe: bool,
    now: Instant,
) -> Option<Result<(Rtc, SdpAnswer), String>> {
    guarded(|| {
        let mut config = rtc_config().set_local_ice_credentials(creds);
        if bwe {
            config = config.enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE_BPS)));
        }
        let mut rtc = config.build(now);
        let candidate = Candidate::host(advertised, "udp")
            .map_err(|e| format!("bad advertised address: {e}"))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("offer refused: {e}"))?;
        Ok::<_, String>((rtc, answer))
    })
}

/// Size an outgoing stream's retransmission cache (called once, when its m-line opens).
///
/// str0m's cache (`EvictingBuffer`) starts at 10 slots and grows only while its entries are
/// younger than `max_age`, up to `max_packets`; a slot is ≈ 430 bytes whatever the payload. So
/// the age bounds it by time, which at a low bitrate is fewer slots: 500 kbps video keeps
/// ≈ 35 instead of all 64 (seed: RSS per participant 1.83 -> 1.52 MiB), a 2.5 Mbps one still
/// would fill the 64 (≈ 230 ms of it).
///
/// Audio is written non-NACKable, so it is never cached nor resent: without the resend ratio
/// cap str0m also keeps no per-packet byte history for it.
pub fn configure_send_stream(rtc: &mut Rtc, mid: Mid, kind: MediaKind) {
    let configured = guarded(|| match rtc.direct_api().stream_tx_by_mid(mid, None) {
        Some(tx) => {
            match kind {
                MediaKind::Audio => tx.set_rtx_cache(SEND_BUFFER_AUDIO, RTX_MAX_AGE, None),
                MediaKind::Video => {
                    tx.set_rtx_cache(SEND_BUFFER_VIDEO, RTX_MAX_AGE, Some(RTX_RATIO_CAP))
                }
            }
            true
        }
        None => false,
    });
    if configured != Some(true) {
        tracing::debug!(%mid, "no send stream to size its retransmission cache");
    }
}

/// Drop the send stream of a stopped m-line.
pub fn remove_send_stream(rtc: &mut Rtc, mid: Mid) {
    let mut api = rtc.direct_api();
    if let Some(ssrc) = api.stream_tx_by_mid(mid, None).map(|tx| tx.ssrc()) {
        api.remove_stream_tx(ssrc);
    }
}

/// Run a call into str0m, turning a panic (a broken invariant inside one `Rtc`) into `None`
/// so that one bad peer is dropped instead of taking down the room.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Direction;

    #[test]
    fn our_answer_asks_publishers_for_opus_fec_and_dtx() {
        // A browser-like offer: Opus and VP8, sending.
        let mut client = str0m::Rtc::new(Instant::now());
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = api.apply().expect("an offer");
        let creds = str0m::ice::secure_ice_creds();
        let advertised = "127.0.0.1:40000".parse().unwrap();
        let (_, answer) = answer_offer(offer, creds, advertised, true, Instant::now())
            .expect("no panic")
            .expect("an answer");
        let sdp = answer.to_sdp_string();
        let opus_fmtp = sdp
            .lines()
            .find(|l| l.starts_with(&format!("a=fmtp:{OPUS_PT} ")))
            .unwrap_or_else(|| panic!("no Opus fmtp in {sdp}"));
        assert!(opus_fmtp.contains("useinbandfec=1"), "{opus_fmtp}");
        assert!(opus_fmtp.contains("usedtx=1"), "{opus_fmtp}");
    }
}
