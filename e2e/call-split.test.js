'use strict';
// Two-process topology: media-node and signaling-node linked over the internal WebSocket.
// Then the media node dies for good: everyone sees the others' media fail (not tiles that
// claim "cam on"), and each client stops retrying after a few attempts until its user acts.
// On the way, one page declares its video m-line a screen (`setSources`) and the other
// receives it as such.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, waitFor, waitMediaFrom, waitEvent, sleep } = require('./lib/harness');
const { threeParticipantCall, roomName } = require('./lib/scenarios');

/** How `page` shows participant `pid`: its tile's media state and its roster entry's text. */
function mediaView(page, pid) {
  return page.evaluate((pid) => {
    const tile = document.querySelector(`.tile[data-participant-id="${CSS.escape(pid)}"]`);
    const li = document.querySelector(`#participant-list li[data-participant-id="${CSS.escape(pid)}"]`);
    const label = tile && tile.querySelector('.tile-media');
    return {
      tile: tile ? tile.dataset.media : null,
      label: label && getComputedStyle(label).display !== 'none' ? label.textContent : '',
      placeholder: !!tile && getComputedStyle(tile.querySelector('.placeholder')).display !== 'none',
      roster: li ? li.innerText.replace(/\s+/g, ' ').trim() : null,
    };
  }, pid);
}

function retryButton(page) {
  return page.evaluate(() => {
    const b = document.getElementById('status-retry-media');
    return !b.hidden && b.getClientRects().length > 0;
  });
}

test('two processes: three join, camera off, one leaves, a fourth joins late', { timeout: 240000 }, async (t) => {
  const h = new Harness('call-split');
  t.after(() => h.close());
  const { url, signaling, media } = await h.startSplit();
  await h.launchBrowser();
  await threeParticipantCall(t, h, url, 'two-process');
  assert.equal(signaling.exitCode, null, 'signaling-node still running');
  assert.equal(media.exitCode, null, 'media-node still running');

  await t.test('media state is visible to everyone; a client gives up after a few attempts', async () => {
    const room = roomName('mstate');
    const eve = await h.openPage(url, { room, name: 'Eve' });
    // Finn's client declares its video m-line as a screen (what a screen share will send).
    const finn = await h.openPage(url, {
      room,
      name: 'Finn',
      initScript: () => {
        const inner = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
          const m = JSON.parse(data);
          if (m.id !== 'setSources') return inner.call(this, data);
          for (const mid of Object.keys(m.sources)) if (m.sources[mid] === 'camera') m.sources[mid] = 'screen';
          return inner.call(this, JSON.stringify(m));
        };
      },
    });
    await h.join(eve, room, 'Eve');
    await h.join(finn, room, 'Finn');
    await waitMediaFrom(eve, [finn.participantId]);
    await waitMediaFrom(finn, [eve.participantId]);
    // Sources as each publisher declared them: Finn's video is a screen, Eve's a camera.
    const sourcesOf = (page, pid) =>
      page.evaluate((pid) => Object.values(window.conclave.tracks).filter((t) => t.participantId === pid).map((t) => `${t.kind}:${t.source}`).sort(), pid);
    assert.deepEqual(await finn.evaluate(() => window.__sent.find((m) => m.id === 'setSources').sources), { 0: 'microphone', 1: 'screen' });
    assert.deepEqual(await sourcesOf(eve, finn.participantId), ['audio:microphone', 'video:screen']);
    assert.deepEqual(await sourcesOf(finn, eve.participantId), ['audio:microphone', 'video:camera']);
    // Connected: Eve sees Finn's media up, and the roster's "cam on" holds.
    const up = await waitFor("Eve: Finn's media connected", async () => {
      const v = await mediaView(eve, finn.participantId);
      return v.tile === 'connected' ? v : null;
    });
    assert.equal(up.label, '');
    assert.match(up.roster, /cam on/);

    // The media node dies and stays dead.
    process.kill(media.pid, 'SIGKILL');
    await media.exited;
    for (const p of [eve, finn]) {
      await waitFor(`${p.label} to give up on media`, () => p.evaluate(() => window.conclave.mediaGaveUp), { timeoutMs: 15000 });
      const st = await p.evaluate(() => document.getElementById('status-text').textContent);
      assert.match(st, /could not connect to the media server after 3 attempts \(the media server is unavailable\)/);
      assert.equal(await retryButton(p), true, `${p.label}: "Try media again" shown`);
      assert.equal(await p.evaluate(() => window.__sent.filter((m) => m.id === 'offer').length), 4, `${p.label}: the join's offer and 3 more`);
    }
    // Each sees the other's media failed: a tile that says so, no "cam on" in the roster.
    for (const [p, other] of [[eve, finn], [finn, eve]]) {
      const v = await waitFor(`${p.label}: ${other.label}'s media failed`, async () => {
        const v = await mediaView(p, other.participantId);
        return v.tile === 'failed' ? v : null;
      });
      assert.equal(v.label, 'Media failed');
      assert.equal(v.placeholder, true);
      assert.doesNotMatch(v.roster, /cam on|mic on/);
      assert.match(v.roster, /no media/);
    }
    // Given up: no more offers (they came 1 s and 2 s apart before).
    await sleep(3000);
    for (const p of [eve, finn]) assert.equal(await p.evaluate(() => window.__sent.filter((m) => m.id === 'offer').length), 4);
    // The user acts: Finn tries again, and Eve sees him trying.
    const before = await eve.evaluate(() => window.conclave.events.length);
    await finn.click('#status-retry-media');
    await waitFor('Finn to offer again', () => finn.evaluate(() => window.__sent.filter((m) => m.id === 'offer').length === 5));
    await waitFor("Eve to see Finn's media connecting", () =>
      eve.evaluate(
        ([pid, from]) => window.conclave.events.slice(from).some((e) => e.id === 'participantState' && e.participantId === pid && e.media === 'connecting'),
        [finn.participantId, before]
      )
    );
    await waitEvent(eve, 'participantState', { participantId: finn.participantId, media: 'failed' });
  });
});
