//! A WebSocket frame-size limit enforced from each frame's header, before its payload is
//! buffered.
//!
//! actix-http's WebSocket decoder waits for a whole frame before it compares its length with
//! the codec's `max_size`, so a client that declares a huge frame and streams it grows the
//! server's memory until the frame ends. [`FrameLimit`] sits between the request body and the
//! decoder: it passes bytes through untouched while following the frame boundaries, and ends
//! the stream with an error at the first header that declares more than the limit. The
//! session that owns the socket reads [`FrameLimit::tripped`]'s flag to close with 1009.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// The longest WebSocket frame header: 2 bytes, an 8-byte extended length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Set once a frame over the limit was declared on a connection (shared with its session).
#[derive(Clone, Debug, Default)]
pub struct Tripped(Arc<AtomicBool>);

impl Tripped {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Follows frame boundaries in a byte stream (pure; no I/O).
#[derive(Debug, Default)]
struct FrameScanner {
    header: [u8; MAX_HEADER],
    /// Header bytes gathered so far (0 while inside a payload).
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
}

impl FrameScanner {
    /// Scan `chunk`; returns the declared length of the first frame over `max`, if any.
    fn scan(&mut self, chunk: &[u8], max: u64) -> Option<u64> {
        let mut pos = 0;
        while pos < chunk.len() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min((chunk.len() - pos) as u64);
                self.payload_left -= skip;
                pos += skip as usize;
                continue;
            }
            self.header[self.have] = chunk[pos];
            self.have += 1;
            pos += 1;
            let Some(len) = self.header_complete() else {
                continue;
            };
            self.have = 0;
            if len > max {
                return Some(len);
            }
            self.payload_left = len;
        }
        None
    }

    /// The payload length once the header gathered so far is complete.
    fn header_complete(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let (ext, len7) = match self.header[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if self.have < need {
            return None;
        }
        Some(len7.unwrap_or_else(|| {
            self.header[2..2 + ext]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }))
    }
}

/// A request body stream whose WebSocket frames may each declare at most `max` payload bytes.
pub struct FrameLimit<S, E> {
    inner: S,
    scanner: FrameScanner,
    max: u64,
    tripped: Tripped,
    /// The error the stream ends with when a frame is over the limit.
    over_limit: fn() -> E,
    done: bool,
}

impl<S, E> FrameLimit<S, E> {
    pub fn new(inner: S, max: usize, over_limit: fn() -> E) -> Self {
        FrameLimit {
            inner,
            scanner: FrameScanner::default(),
            max: max as u64,
            tripped: Tripped::default(),
            over_limit,
            done: false,
        }
    }

    /// The flag set when this stream refuses a frame.
    pub fn tripped(&self) -> Tripped {
        self.tripped.clone()
    }
}

impl<S, E> Stream for FrameLimit<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scanner.scan(&chunk, this.max) {
                None => Poll::Ready(Some(Ok(chunk))),
                Some(declared) => {
                    tracing::info!(declared, limit = this.max, "websocket frame over the limit");
                    this.tripped.0.store(true, Ordering::Relaxed);
                    this.done = true;
                    Poll::Ready(Some(Err((this.over_limit)())))
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header declaring `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(len as u64);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_chunking() {
        let stream: Vec<u8> = [frame(5), frame(300), frame(70_000), frame(0), frame(1000)].concat();
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut s = FrameScanner::default();
            for c in stream.chunks(chunk) {
                assert_eq!(s.scan(c, 70_000), None, "chunk size {chunk}");
            }
            assert_eq!((s.have, s.payload_left), (0, 0), "ends on a boundary");
        }
    }

    #[test]
    fn an_oversized_header_is_caught_before_its_payload() {
        for declared in [70_001u64, 1 << 30, u64::MAX] {
            let stream: Vec<u8> = [frame(10), header(declared)].concat();
            for chunk in [1, 5, stream.len()] {
                let mut s = FrameScanner::default();
                let found = stream.chunks(chunk).find_map(|c| s.scan(c, 70_000));
                assert_eq!(found, Some(declared), "chunk size {chunk}");
            }
        }
    }

    #[test]
    fn the_stream_ends_with_the_error_and_sets_the_flag() {
        let chunks: Vec<Result<Bytes, &str>> = vec![
            Ok(Bytes::from(frame(3))),
            Ok(Bytes::from(header(1 << 30))),
            Ok(Bytes::from(vec![b'x'; 1024])),
        ];
        let mut limited = FrameLimit::new(futures_util::stream::iter(chunks), 1024, || "too big");
        let tripped = limited.tripped();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = Pin::new(&mut limited).poll_next(&mut cx) {
            out.push(item);
        }
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok());
        assert_eq!(out[1], Err("too big"));
        assert!(tripped.is_set());
    }
}
