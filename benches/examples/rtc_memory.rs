//! Heap bytes held by one SFU-side `Rtc` as a room grows: built, offer accepted, then N
//! send-only m-lines negotiated (what a subscriber in an (N+1)-person room holds), before any
//! media flows. `cargo run --release -p conclave-bench --example rtc_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    str0m::crypto::from_feature_flags().install_process_default();
    println!(
        "size_of RtpPacket (one retransmission cache slot): {} B",
        std::mem::size_of::<str0m::rtp::RtpPacket>()
    );
    let now = Instant::now();
    for subscriptions in [0usize, 1, 4, 19] {
        let before = LIVE.load(Relaxed);
        // The browser side: offers audio + video send-only.
        let mut client = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let client_bytes = LIVE.load(Relaxed) - before;

        let start = LIVE.load(Relaxed);
        let mut sfu = conclave_media_node::sfu::rtc_config().build(now);
        let built = LIVE.load(Relaxed) - start;
        let answer = sfu.sdp_api().accept_offer(offer).unwrap();
        client.sdp_api().accept_answer(pending, answer).unwrap();
        let accepted = LIVE.load(Relaxed) - start;
        // Server offers the other participants' tracks; the client answers.
        for _ in 0..subscriptions {
            let mut api = sfu.sdp_api();
            api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some("x".into()),
                None,
                None,
            );
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("x".into()),
                None,
                None,
            );
            let (offer, pending) = api.apply().unwrap();
            let answer: SdpAnswer = client.sdp_api().accept_offer(offer).unwrap();
            sfu.sdp_api().accept_answer(pending, answer).unwrap();
        }
        let negotiated = LIVE.load(Relaxed) - start;
        println!(
            "subscriptions {subscriptions:>2}: sfu Rtc built {:>7} B, after offer {:>7} B, after {subscriptions} A+V pairs {:>8} B ({:>6} B per pair); client {client_bytes} B",
            built,
            accepted,
            negotiated,
            if subscriptions > 0 { (negotiated - accepted) / subscriptions as isize } else { 0 }
        );
        drop(sfu);
        drop(client);
    }
}
