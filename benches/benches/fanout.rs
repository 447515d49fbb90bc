//! Micro-benchmark of the forwarding hot path: one RTP packet written to N subscribers'
//! send streams and drained to encrypted datagrams (SRTP AES-GCM), as the SFU's `forward` +
//! `poll_output` do per packet. The `Rtc`s are connected in memory (real ICE, DTLS and
//! SRTP; no sockets). `cargo bench -p conclave-bench --bench fanout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// One SFU-side `Rtc` connected to one subscriber `Rtc`, with a negotiated send-only video
/// m-line on the SFU side.
struct Pair {
    sfu: Rtc,
    /// The subscriber: kept alive with its pair, it only takes part in the setup.
    #[allow(dead_code)]
    sub: Rtc,
    sfu_addr: SocketAddr,
    sub_addr: SocketAddr,
    mid: Mid,
    pt: Pt,
}

fn connected_pair(i: u16) -> Pair {
    let now = Instant::now();
    let sfu_addr: SocketAddr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
    let sub_addr: SocketAddr = format!("127.0.0.2:{}", 20_000 + i).parse().unwrap();
    let mut sfu = conclave_media_node::sfu::rtc_config().build(now);
    sfu.add_local_candidate(Candidate::host(sfu_addr, "udp").unwrap());
    let mut sub = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    sub.add_local_candidate(Candidate::host(sub_addr, "udp").unwrap());
    // The subscriber offers (as the browser's first offer does), the SFU answers; then the
    // SFU offers a send-only video line, as it does for another participant's camera.
    let mut api = sub.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = sfu.sdp_api().accept_offer(offer).unwrap();
    sub.sdp_api().accept_answer(pending, answer).unwrap();
    let mut api = sfu.sdp_api();
    let mid = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("p".into()),
        None,
        None,
    );
    let (offer, pending) = api.apply().unwrap();
    let answer = sub.sdp_api().accept_offer(offer).unwrap();
    sfu.sdp_api().accept_answer(pending, answer).unwrap();
    let pt = sfu
        .codec_config()
        .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
        .unwrap()
        .pt();
    let mut pair = Pair {
        sfu,
        sub,
        sfu_addr,
        sub_addr,
        mid,
        pt,
    };
    // Shuttle datagrams until DTLS is up on both sides (bounded).
    let start = Instant::now();
    let (mut a, mut b) = (false, false);
    let mut t = now;
    while !(a && b) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pair did not connect"
        );
        t += Duration::from_millis(5);
        a |= shuttle(&mut pair.sfu, &mut pair.sub, pair.sub_addr, t);
        b |= shuttle(&mut pair.sub, &mut pair.sfu, pair.sfu_addr, t);
        pair.sfu.handle_input(Input::Timeout(t)).unwrap();
        pair.sub.handle_input(Input::Timeout(t)).unwrap();
    }
    pair
}

/// Deliver everything `from` wants to send to `to` (at `to_addr`); true once `from` is connected.
fn shuttle(from: &mut Rtc, to: &mut Rtc, to_addr: SocketAddr, now: Instant) -> bool {
    let mut connected = false;
    loop {
        match from.poll_output().unwrap() {
            Output::Timeout(_) => return connected,
            Output::Transmit(tx) => {
                if tx.destination == to_addr {
                    let r = Receive::new(Protocol::Udp, tx.source, tx.destination, &tx.contents)
                        .unwrap();
                    to.handle_input(Input::Receive(now, r)).unwrap();
                }
            }
            Output::Event(Event::Connected) => connected = true,
            Output::Event(_) => {}
        }
    }
}

fn bench(c: &mut Criterion) {
    str0m::crypto::from_feature_flags().install_process_default();
    let payload: Arc<[u8]> = vec![0x90u8; 1100].into();
    let mut group = c.benchmark_group("forward one RTP packet (1100 B, SRTP) to N subscribers");
    for n in [1usize, 4, 19] {
        let mut pairs: Vec<Pair> = (0..n as u16).map(connected_pair).collect();
        let mut seq = 1000u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                let now = Instant::now();
                let mut bytes = 0;
                for p in pairs.iter_mut() {
                    let write = RtpWrite::new(
                        p.pt,
                        SeqNo::from(seq),
                        (seq * 3000) as u32,
                        now,
                        payload.clone(),
                    )
                    .nackable(true);
                    p.sfu
                        .direct_api()
                        .stream_tx_by_mid(p.mid, None)
                        .unwrap()
                        .write_rtp(write);
                    while let Ok(out) = p.sfu.poll_output() {
                        match out {
                            Output::Transmit(t) => bytes += t.contents.len(),
                            Output::Timeout(_) => break,
                            Output::Event(_) => {}
                        }
                    }
                }
                bytes
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
