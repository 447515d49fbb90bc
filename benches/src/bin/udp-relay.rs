//! `udp-relay`: the floor of our benchmarks. A plain UDP relay with no ICE, DTLS or SRTP:
//! whatever an SFU does on top of "receive a datagram, send it to everyone else in the
//! room" is what the benchmark reports measure against this.
//!
//! Protocol (ASCII control datagrams):
//! - `JOIN <room>` registers the source address in `<room>` (leaving any room it was in) and
//!   is answered with `JOINED <room>`.
//! - `LEAVE` unregisters the source.
//! - Any other datagram from a registered source goes to every other member of its room, one
//!   `send_to` per member (like an unbatched SFU), or one `sendmmsg` per room with `--batch`.
//!   Datagrams from unknown sources are dropped.
//!
//! Single-threaded, blocking socket, 4 MiB kernel buffers, no allocation per packet. Prints
//! `listening udp=ADDR` when ready; exits when killed or when its parent goes away.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use clap::Parser;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Plain UDP relay (the benchmarks' floor).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to bind the UDP socket to.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Send each packet to the room with one `sendmmsg` instead of one `send_to` per member.
    #[arg(long)]
    batch: bool,
}

/// Kernel buffers asked for (capped by `net.core.rmem_max` / `wmem_max`).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// `sendmmsg` takes at most this many messages per call (`UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;

#[derive(Default)]
struct Room {
    members: Vec<SocketAddr>,
    /// The same addresses in kernel form, for `sendmmsg`.
    raw: Vec<SockAddr>,
}

struct Relay {
    socket: UdpSocket,
    batch: bool,
    room_ids: HashMap<Vec<u8>, usize>,
    rooms: Vec<Room>,
    /// Source address -> index into `rooms`.
    sources: HashMap<SocketAddr, usize>,
    /// Reused for every batched send (capacity kept: no allocation per packet).
    msgs: Vec<libc::mmsghdr>,
}

fn main() {
    let cli = Cli::parse();
    let socket = match bind(cli.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp-relay: cannot bind {}: {e}", cli.listen);
            std::process::exit(2);
        }
    };
    let local = socket.local_addr().unwrap_or(cli.listen);
    println!("listening udp={local}");
    let _ = std::io::stdout().flush();
    let mut relay = Relay {
        socket,
        batch: cli.batch,
        room_ids: HashMap::new(),
        rooms: Vec::new(),
        sources: HashMap::new(),
        msgs: Vec::new(),
    };
    relay.run();
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops bursts sooner.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    // Wake up now and then when idle, to notice that our parent is gone.
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(socket)
}

impl Relay {
    fn run(&mut self) {
        let parent = std::os::unix::process::parent_id();
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if std::os::unix::process::parent_id() != parent {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP errors surfacing on the socket and the like: keep relaying.
                Err(_) => {}
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        if let Some(name) = data.strip_prefix(b"JOIN ") {
            self.join(name.trim_ascii(), from);
        } else if data.trim_ascii() == b"LEAVE" {
            self.leave(from);
        } else if let Some(&room) = self.sources.get(&from) {
            if self.batch {
                self.forward_batched(room, data, from);
            } else {
                for member in &self.rooms[room].members {
                    if *member != from {
                        let _ = self.socket.send_to(data, member);
                    }
                }
            }
        }
    }

    fn join(&mut self, name: &[u8], from: SocketAddr) {
        if name.is_empty() {
            return;
        }
        self.leave(from);
        let next = self.rooms.len();
        let room = *self.room_ids.entry(name.to_vec()).or_insert(next);
        if room == next {
            self.rooms.push(Room::default());
        }
        self.rooms[room].members.push(from);
        self.rooms[room].raw.push(from.into());
        self.sources.insert(from, room);
        let mut reply = b"JOINED ".to_vec();
        reply.extend_from_slice(name);
        let _ = self.socket.send_to(&reply, from);
    }

    fn leave(&mut self, from: SocketAddr) {
        if let Some(room) = self.sources.remove(&from) {
            let room = &mut self.rooms[room];
            if let Some(i) = room.members.iter().position(|m| *m == from) {
                room.members.swap_remove(i);
                room.raw.swap_remove(i);
            }
        }
    }

    fn forward_batched(&mut self, room: usize, data: &[u8], from: SocketAddr) {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let room = &self.rooms[room];
        self.msgs.clear();
        for (member, raw) in room.members.iter().zip(&room.raw) {
            if *member == from {
                continue;
            }
            // SAFETY: an all-zero msghdr is valid (no control data, no flags).
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            // sendmmsg only reads the address and the iovec.
            hdr.msg_name = raw.as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = raw.len();
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            self.msgs.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        let fd = self.socket.as_raw_fd();
        let mut sent = 0;
        while sent < self.msgs.len() {
            let count = (self.msgs.len() - sent).min(MAX_BATCH);
            // SAFETY: `msgs[sent..sent + count]` are initialised headers whose pointers
            // (addresses in `room.raw`, `iov`, `data`) outlive this call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.as_mut_ptr().add(sent),
                    count as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                sent += n as usize;
            } else if std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
                // The first message failed: skip it, like a failed `send_to`.
                sent += 1;
            }
        }
    }
}
