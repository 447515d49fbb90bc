//! Micro-benchmark of the media node's UDP router: the per-datagram lookup that hands each
//! packet to its room (`cargo bench -p conclave-bench --bench router`).

use std::net::SocketAddr;

use actix::prelude::*;
use std::time::Instant;

use conclave_media_node::sfu::ice;
use conclave_media_node::sfu::udp::{Route, Router, RouterLimits, RouterUpdate};
use conclave_media_node::sfu::DatagramBatch;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use str0m::ice::{StunMessage, TransId};

struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<DatagramBatch> for Sink {
    type Result = ();
    fn handle(&mut self, _: DatagramBatch, _: &mut Context<Self>) {}
}

/// A STUN binding request as a browser sends it: USERNAME `ufrag:remote`, signed with the
/// node's password for that peer (the router verifies it before learning the address).
fn stun(ufrag: &str, password: &str) -> Vec<u8> {
    let username = format!("{ufrag}:remote");
    let msg = StunMessage::binding_request(&username, TransId::new(), true, 1, 0x6e7f_00ff, true);
    let mut buf = vec![0u8; 512];
    let n = msg
        .to_bytes(Some(password.as_bytes()), &mut buf, ice::stun_hmac)
        .expect("fits");
    buf.truncate(n);
    buf
}

fn bench(c: &mut Criterion) {
    let system = System::new();
    let sink = system.block_on(async { Sink.start() });
    // A busy node: 1,000 peers, each known by ufrag and by learned address. The ingress
    // budget is checked on every datagram but never runs out here (the bench sends millions
    // a second).
    let limits = RouterLimits {
        ingress_pps: u32::MAX,
        ..RouterLimits::default()
    };
    let mut router = Router::new(limits);
    let now = Instant::now();
    let password = "bench-password-0123456789";
    let mut addrs = Vec::new();
    for peer in 0..1000u64 {
        let ufrag = format!("u{peer:07}");
        router.apply(
            RouterUpdate::Add {
                ufrag: ufrag.clone(),
                password: password.to_string(),
                route: Route {
                    peer,
                    room_id: 1,
                    room: sink.clone().recipient(),
                },
            },
            now,
        );
        let addr: SocketAddr = format!("127.0.{}.{}:{}", peer / 250, peer % 250, 40000 + peer)
            .parse()
            .unwrap();
        router
            .decide(addr, &stun(&ufrag, password), now)
            .expect("a verified request");
        addrs.push(addr);
    }
    let rtp = [0x80u8; 1200];
    let mut i = 0;
    c.bench_function("route RTP by learned address (1k peers)", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(router.decide(black_box(addrs[i]), black_box(&rtp), now))
        })
    });
    let request = stun("u0000500", password);
    c.bench_function("route STUN by ufrag, integrity verified (1k peers)", |b| {
        b.iter(|| black_box(router.decide(black_box(addrs[500]), black_box(&request), now)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
