//! Micro-benchmark of the media node's UDP router: the per-datagram lookup that hands each
//! packet to its room (`cargo bench -p conclave-bench --bench router`).

use std::net::SocketAddr;

use actix::prelude::*;
use conclave_media_node::sfu::udp::{Route, Router, RouterUpdate};
use conclave_media_node::sfu::DatagramBatch;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<DatagramBatch> for Sink {
    type Result = ();
    fn handle(&mut self, _: DatagramBatch, _: &mut Context<Self>) {}
}

/// A STUN binding request whose USERNAME starts with `ufrag`.
fn stun(ufrag: &str) -> Vec<u8> {
    let username = format!("{ufrag}:remote");
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[7; 12]);
    msg.extend_from_slice(&attr);
    msg
}

fn bench(c: &mut Criterion) {
    let system = System::new();
    let sink = system.block_on(async { Sink.start() });
    // A busy node: 1,000 peers, each known by ufrag and by learned address.
    let mut router = Router::default();
    let mut addrs = Vec::new();
    for peer in 0..1000u64 {
        let ufrag = format!("u{peer:07}");
        router.apply(RouterUpdate::Add {
            ufrag: ufrag.clone(),
            route: Route {
                peer,
                room_id: 1,
                room: sink.clone().recipient(),
            },
        });
        let addr: SocketAddr = format!("127.0.{}.{}:{}", peer / 250, peer % 250, 40000 + peer)
            .parse()
            .unwrap();
        router.decide(addr, &stun(&ufrag));
        addrs.push(addr);
    }
    let rtp = [0x80u8; 1200];
    let mut i = 0;
    c.bench_function("route RTP by learned address (1k peers)", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(router.decide(black_box(addrs[i]), black_box(&rtp)))
        })
    });
    let request = stun("u0000500");
    c.bench_function("route STUN by ufrag (1k peers)", |b| {
        b.iter(|| black_box(router.decide(black_box(addrs[500]), black_box(&request))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
