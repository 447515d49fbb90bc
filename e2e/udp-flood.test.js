'use strict';
// A bounded flood of garbage datagrams (random bytes, and packets that look like STUN, DTLS,
// RTP and RTCP by their first bytes) at the media node's UDP port during a call: the call
// must keep flowing and the server must stay up.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const fs = require('node:fs');
const { Harness, waitMediaFrom, assertMediaGrowing, httpGet, stats } = require('./lib/harness');
const { roomName, assertNoClientErrors } = require('./lib/scenarios');

const FLOOD_COUNT = Number(process.env.E2E_FLOOD_COUNT || 20000);
const FLOOD_SEED = Number(process.env.E2E_FLOOD_SEED || Date.now() % 2 ** 31);
// Paced so that the server reads (most of) the flood instead of the kernel dropping it.
const FLOOD_BATCH = 50;
const FLOOD_BATCH_GAP_MS = 10; // about 5000 datagrams per second, in bursts smaller than a default socket buffer

/** Datagrams the kernel dropped on the server's UDP socket (receive buffer full), or null. */
function socketDrops(port) {
  try {
    const want = ':' + port.toString(16).toUpperCase().padStart(4, '0');
    for (const line of fs.readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 12 && cols[1].endsWith(want)) return Number(cols[cols.length - 1]);
    }
  } catch (_) {}
  return null;
}

// Small deterministic PRNG (mulberry32) so a failing flood can be replayed with its seed.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeDatagram(rnd, i) {
  const int = (n) => Math.floor(rnd() * n);
  const size = 1 + int(1500);
  const buf = Buffer.alloc(size);
  for (let k = 0; k < size; k++) buf[k] = int(256);
  const kind = i % 10;
  if (kind <= 1 && size >= 20) {
    // STUN-like: type (binding request/indication/response), length, magic cookie, txid,
    // then garbage or half-plausible attributes (USERNAME, MESSAGE-INTEGRITY, FINGERPRINT).
    const types = [0x0001, 0x0011, 0x0101, 0x0111, int(0x3fff)];
    buf.writeUInt16BE(types[int(types.length)], 0);
    buf.writeUInt16BE(rnd() < 0.5 ? size - 20 : int(0xffff), 2);
    buf.writeUInt32BE(0x2112a442, 4);
    let off = 20;
    while (off + 4 <= size && rnd() < 0.8) {
      const attrs = [0x0006, 0x0008, 0x8028, 0x0024, 0x8029, 0x802a, 0x0025, int(0xffff)];
      buf.writeUInt16BE(attrs[int(attrs.length)], off);
      const len = rnd() < 0.7 ? Math.min(int(64), size - off - 4) : int(0xffff);
      buf.writeUInt16BE(len, off + 2);
      off += 4 + Math.max(0, Math.min(len, size - off - 4));
      off = (off + 3) & ~3;
    }
  } else if (kind <= 3 && size >= 13) {
    // DTLS-like record: content type 20..25 (mostly handshake), DTLS 1.2/1.0 version, epoch,
    // sequence, length; sometimes a ClientHello handshake header.
    buf[0] = rnd() < 0.6 ? 22 : 20 + int(44);
    buf[1] = 0xfe;
    buf[2] = rnd() < 0.5 ? 0xfd : 0xff;
    buf.writeUInt16BE(rnd() < 0.7 ? 0 : int(3), 3);
    buf.writeUInt16BE(rnd() < 0.5 ? size - 13 : int(0xffff), 11);
    if (size >= 25 && rnd() < 0.5) {
      buf[13] = 1; // client_hello
      buf.writeUIntBE(Math.min(size - 25, 0xffffff), 14, 3);
      buf.writeUInt16BE(0, 17);
      buf.writeUIntBE(0, 19, 3);
      buf.writeUIntBE(Math.min(size - 25, 0xffffff), 22, 3);
    }
  } else if (kind <= 6 && size >= 12) {
    // RTP (PT 0..127) or RTCP (200..206) header with random SSRCs.
    buf[0] = 0x80 | int(0x40);
    buf[1] = rnd() < 0.5 ? 200 + int(7) : (rnd() < 0.5 ? 0x80 : 0) | (96 + int(32));
  } else if (kind === 7) {
    // Tiny packets.
    return buf.subarray(0, 1 + int(4));
  }
  return buf;
}

/**
 * Send `count` datagrams, `batch` at a time with `gapMs` between batches (gapMs 0: as fast as
 * the socket takes them). Bounded: exactly `count` sends.
 */
function flood(host, port, count, rnd, { batch: batchSize = FLOOD_BATCH, gapMs = FLOOD_BATCH_GAP_MS } = {}) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    let sent = 0;
    let errors = 0;
    let i = 0;
    const started = Date.now();
    sock.on('error', (err) => {
      sock.close();
      reject(err);
    });
    const batch = () => {
      const end = Math.min(i + batchSize, count);
      let pending = end - i;
      if (pending === 0) {
        sock.close();
        resolve({ sent, errors, ms: Date.now() - started });
        return;
      }
      for (; i < end; i++) {
        sock.send(makeDatagram(rnd, i), port, host, (err) => {
          if (err) errors++;
          else sent++;
          if (--pending === 0) setTimeout(batch, gapMs);
        });
      }
    };
    batch();
  });
}

test('UDP garbage flood does not break a call or the server', { timeout: 180000 }, async (t) => {
  const h = new Harness('udp-flood');
  t.after(() => h.close());
  const { url, udp, signaling } = await h.startEmbedded();
  assert.ok(udp, 'the signaling node\'s "listening" line must name its UDP port (udp=HOST:PORT)');
  await h.launchBrowser();
  const room = roomName('flood');
  const a = await h.openPage(url, { room, name: 'Amy' });
  const b = await h.openPage(url, { room, name: 'Bert' });
  await Promise.all([h.join(a, room, 'Amy'), h.join(b, room, 'Bert')]);
  await waitMediaFrom(a, [b.participantId]);
  await waitMediaFrom(b, [a.participantId]);

  const before = await Promise.all([stats(a), stats(b)]);
  // Phase 1: paced (what the server can read); phase 2: a burst as fast as Node sends.
  const rnd = prng(FLOOD_SEED);
  const burstCount = Math.floor(FLOOD_COUNT / 10);
  const d0 = socketDrops(udp.port);
  const paced = await flood(udp.host, udp.port, FLOOD_COUNT - burstCount, rnd);
  const d1 = socketDrops(udp.port);
  const burst = await flood(udp.host, udp.port, burstCount, rnd, { batch: 500, gapMs: 0 });
  const d2 = socketDrops(udp.port);
  const drops = (x, y) => (x == null || y == null ? 'unknown' : y - x);
  const line =
    `udp flood to ${udp.host}:${udp.port}, seed ${FLOOD_SEED}: ` +
    `paced ${paced.sent} datagrams in ${paced.ms} ms (kernel dropped ${drops(d0, d1)} on the server socket), ` +
    `burst ${burst.sent} in ${burst.ms} ms (kernel dropped ${drops(d1, d2)}); send errors ${paced.errors + burst.errors}`;
  h.note(line);
  t.diagnostic(line);
  assert.equal(paced.sent + burst.sent, FLOOD_COUNT);
  // Media kept flowing across the flood...
  const during = await Promise.all([stats(a), stats(b)]);
  assert.ok(during[0][b.participantId].videoFramesDecoded > before[0][b.participantId].videoFramesDecoded, 'Amy decoded frames during the flood');
  assert.ok(during[1][a.participantId].videoFramesDecoded > before[1][a.participantId].videoFramesDecoded, 'Bert decoded frames during the flood');

  assert.equal(signaling.exitCode, null, 'signaling-node still running after the flood');
  // ... and keeps flowing afterwards (two growth windows in a row, audio and video).
  for (let i = 0; i < 2; i++) {
    await assertMediaGrowing(a, [b.participantId], { timeoutMs: 20000 });
    await assertMediaGrowing(b, [a.participantId], { timeoutMs: 20000 });
  }
  // Still serving, still answering.
  const res = await httpGet(`${url}/`);
  assert.equal(res.status, 200);
  for (const p of [a, b]) {
    assert.equal(await p.evaluate(() => window.conclave.pc.connectionState), 'connected', `${p.label} media connection`);
  }
  await assertNoClientErrors([a, b]);
  assert.equal(signaling.exitCode, null, 'signaling-node still running');
});
