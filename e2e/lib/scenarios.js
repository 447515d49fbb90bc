'use strict';
// Scenarios shared by several test files (one per server topology).

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { waitFor, stats, waitMediaFrom, assertMediaGrowing, waitEvent } = require('./harness');

function roomName(prefix) {
  return `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
}

/**
 * Poll the page's stats until every pid in `pids` has a decoded video frame; returns
 * { [pid]: ms since page.joinStartedAt when its first decoded frame was seen }.
 */
async function firstFrameTimes(page, pids, timeoutMs = 30000) {
  const seen = {};
  await waitFor(
    `${page.label} to decode a first video frame from each of ${pids.join(', ')}`,
    async () => {
      const s = await stats(page);
      const now = Date.now();
      for (const p of pids) {
        if (seen[p] == null && s[p] && s[p].videoFramesDecoded > 0) seen[p] = now - page.joinStartedAt;
      }
      return pids.every((p) => seen[p] != null) ? seen : null;
    },
    { timeoutMs, intervalMs: 50 }
  );
  return seen;
}

async function tileState(page, pid) {
  return page.evaluate((pid) => {
    const el = document.querySelector(`.tile[data-participant-id="${CSS.escape(pid)}"]`);
    if (!el) return null;
    const visible = (sel) => {
      const b = el.querySelector(sel);
      return !!b && getComputedStyle(b).display !== 'none' && b.getClientRects().length > 0;
    };
    return {
      audio: el.dataset.audio,
      video: el.dataset.video,
      camBadgeVisible: visible('.badge-cam'),
      micBadgeVisible: visible('.badge-mic'),
      placeholderVisible: visible('.placeholder'),
      name: el.querySelector('.tile-name').textContent,
    };
  }, pid);
}

function tileCount(page, pid) {
  return page.evaluate((pid) => document.querySelectorAll(`.tile[data-participant-id="${CSS.escape(pid)}"]`).length, pid);
}

async function assertNoClientErrors(pages) {
  for (const p of pages) {
    const errors = await p.evaluate(() => window.conclave.errors.slice());
    assert.deepEqual(errors, [], `${p.label} showed errors: ${errors.join(' | ')}`);
    assert.deepEqual(p.uncaughtErrors || [], [], `${p.label} had uncaught page errors`);
  }
}

function fmtTimes(label, page, times, names) {
  const parts = Object.entries(times).map(([pid, ms]) => `${names[pid] || pid}=${ms}ms`);
  return `${label}: ${page.label} join -> first decoded frame: ${parts.join(', ')}`;
}

/**
 * Three participants join one room, get each other's audio and video; one turns its camera
 * off (the others see participantState and the tile's "cam off"); one leaves (the others see
 * participantLeft and the tile goes); a fourth joins late and receives the remaining ones.
 * Returns the join -> first frame timings.
 */
async function threeParticipantCall(t, h, url, topology) {
  const room = roomName('call');
  const pages = [];
  for (const name of ['Alice', 'Bob', 'Carol']) pages.push(await h.openPage(url, { room, name }));
  const [alice, bob, carol] = pages;
  h.note(`${topology}: room ${room}`);

  // All three join at once.
  await Promise.all(pages.map((p) => h.join(p, room, p.label)));
  const names = {};
  for (const p of pages) names[p.participantId] = p.label;
  const others = (page, list) => list.filter((p) => p !== page).map((p) => p.participantId);

  const report = [];
  const timings = await Promise.all(pages.map((p) => firstFrameTimes(p, others(p, pages))));
  pages.forEach((p, i) => {
    const line = fmtTimes(topology, p, timings[i], names);
    report.push(line);
    t.diagnostic(line);
  });
  // In-page measurement too (requestVideoFrameCallback on the tile), for comparison.
  for (const p of pages) {
    const inPage = await p.evaluate(() => window.conclave.timings);
    h.note(`${p.label} in-page timings ${JSON.stringify(inPage)}`);
  }

  // Audio and video from each of the other two, sampled twice, growing.
  for (const p of pages) await waitMediaFrom(p, others(p, pages));
  await Promise.all(pages.map((p) => assertMediaGrowing(p, others(p, pages))));

  // Roster and tiles.
  for (const p of pages) {
    const roster = await p.evaluate(() => Object.keys(window.conclave.participants));
    for (const o of others(p, pages)) {
      assert.ok(roster.includes(o), `${p.label}'s roster lacks ${names[o]} (${o}): ${roster}`);
      assert.equal(await tileCount(p, o), 1, `${p.label} should have exactly one tile for ${names[o]}`);
      const ts = await tileState(p, o);
      assert.equal(ts.video, 'on');
      assert.equal(ts.camBadgeVisible, false);
    }
  }

  // Carol turns her camera off.
  await carol.evaluate(() => window.conclave.setVideo(false));
  const carolId = carol.participantId;
  for (const p of [alice, bob]) {
    const ev = await waitEvent(p, 'participantState', { participantId: carolId, video: false });
    assert.equal(ev.audio, true, 'carol still has audio on');
    const ts = await waitFor(`${p.label}: Carol's tile to show cam off`, async () => {
      const s = await tileState(p, carolId);
      return s && s.video === 'off' && s.camBadgeVisible && s.placeholderVisible ? s : null;
    });
    assert.equal(ts.micBadgeVisible, false);
    const rosterEntry = await p.evaluate((id) => window.conclave.participants[id], carolId);
    assert.equal(rosterEntry.video, false);
  }
  const own = await carol.evaluate(() => {
    const el = document.querySelector('.tile.local');
    return { video: el.dataset.video, pid: el.dataset.participantId };
  });
  assert.deepEqual(own, { video: 'off', pid: carolId }, 'own tile shows cam off');
  const sentSetVideo = await carol.evaluate(() => window.__sent.filter((m) => m.id === 'setVideo'));
  assert.deepEqual(sentSetVideo, [{ id: 'setVideo', enabled: false }]);
  // Mute is not renegotiation: Carol sent exactly one offer.
  assert.equal(await carol.evaluate(() => window.__sent.filter((m) => m.id === 'offer').length), 1);

  // Bob leaves.
  const bobId = bob.participantId;
  await bob.evaluate(() => window.conclave.leave());
  assert.equal(await bob.evaluate(() => window.conclave.state), 'left');
  assert.ok(await bob.evaluate(() => window.conclave.events.some((e) => e.id === 'left')), 'Bob got "left"');
  for (const p of [alice, carol]) {
    const ev = await waitEvent(p, 'participantLeft', { participantId: bobId });
    assert.equal(ev.reason, 'left');
    await waitFor(`${p.label}: Bob's tile to disappear`, async () => (await tileCount(p, bobId)) === 0);
    assert.equal(await p.evaluate((id) => id in window.conclave.participants, bobId), false);
  }
  // Alice and Carol still hear each other (Carol's camera is off: audio only from her).
  await assertMediaGrowing(alice, [carolId], { video: false });
  await assertMediaGrowing(carol, [alice.participantId]);

  // Carol turns her camera back on.
  await carol.evaluate(() => window.conclave.setVideo(true));
  await waitEvent(alice, 'participantState', { participantId: carolId, video: true });
  await waitFor(`Alice: Carol's tile to show cam on`, async () => {
    const s = await tileState(alice, carolId);
    return s && s.video === 'on' && !s.camBadgeVisible;
  });

  // Dave joins late and receives the remaining publishers.
  const dave = await h.openPage(url, { room, name: 'Dave' });
  await h.join(dave, room, 'Dave');
  names[dave.participantId] = 'Dave';
  const joined = await dave.evaluate(() => window.conclave.events.find((e) => e.id === 'joined'));
  const rosterIds = joined.participants.map((p) => p.participantId).sort();
  assert.deepEqual(rosterIds, [alice.participantId, carolId].sort(), 'Dave sees Alice and Carol in joined');
  const remaining = [alice.participantId, carolId];
  const daveTimes = await firstFrameTimes(dave, remaining);
  const line = fmtTimes(`${topology} (late join)`, dave, daveTimes, names);
  report.push(line);
  t.diagnostic(line);
  await waitMediaFrom(dave, remaining);
  await assertMediaGrowing(dave, remaining);
  // And the others receive Dave.
  await waitMediaFrom(alice, [dave.participantId]);
  await waitMediaFrom(carol, [dave.participantId]);
  await assertMediaGrowing(alice, [carolId, dave.participantId]);
  await assertMediaGrowing(carol, [alice.participantId, dave.participantId]);

  await assertNoClientErrors([alice, bob, carol, dave]);
  return report;
}

module.exports = { threeParticipantCall, roomName, firstFrameTimes, tileState, tileCount, assertNoClientErrors };
