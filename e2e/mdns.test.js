'use strict';
// Chromium with its default privacy: local IPs are hidden behind mDNS `.local` host
// candidates. The server ignores those and must rely on peer-reflexive candidates.
//
// Granting camera/microphone lifts that privacy in Chromium, so the pages here never get a
// device permission: getUserMedia is replaced by a canvas + oscillator stream.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, waitMediaFrom, assertMediaGrowing } = require('./lib/harness');
const { roomName, firstFrameTimes, assertNoClientErrors } = require('./lib/scenarios');

test('default mDNS privacy: two participants get media both ways', { timeout: 180000 }, async (t) => {
  const h = new Harness('mdns');
  t.after(() => h.close());
  const { url, signaling } = await h.startEmbedded();
  await h.launchBrowser({ mdnsPrivacy: true });
  const room = roomName('mdns');
  const a = await h.openPage(url, { room, name: 'Ann', synthetic: true });
  const b = await h.openPage(url, { room, name: 'Ben', synthetic: true });
  await Promise.all([h.join(a, room, 'Ann'), h.join(b, room, 'Ben')]);

  const [ta, tb] = await Promise.all([firstFrameTimes(a, [b.participantId]), firstFrameTimes(b, [a.participantId])]);
  const line = `mdns: join -> first decoded frame: Ann ${ta[b.participantId]}ms, Ben ${tb[a.participantId]}ms`;
  t.diagnostic(line);
  await waitMediaFrom(a, [b.participantId]);
  await waitMediaFrom(b, [a.participantId]);
  await assertMediaGrowing(a, [b.participantId]);
  await assertMediaGrowing(b, [a.participantId]);

  // The condition under test really held: host candidates went out as .local names only.
  for (const p of [a, b]) {
    const cands = await p.evaluate(() => window.__sent.filter((m) => m.id === 'iceCandidate').map((m) => m.candidate));
    const hosts = cands.filter((c) => / typ host/.test(c)).map((c) => c.split(' ')[4]);
    h.note(`${p.label} sent host candidates: ${hosts.join(', ')}`);
    assert.ok(hosts.length > 0, `${p.label} sent no host candidates at all: ${JSON.stringify(cands)}`);
    assert.ok(
      hosts.every((addr) => addr.endsWith('.local')),
      `${p.label} sent raw IP host candidates (mDNS privacy not in effect): ${hosts.join(', ')}`
    );
  }
  await assertNoClientErrors([a, b]);
  assert.equal(signaling.exitCode, null, 'signaling-node still running');
});
