'use strict';
// Speaking indicators (issue 12, item 5): one page's microphone is a WebAudio oscillator,
// the others' are silent; only that participant is reported speaking (and dominant), every
// page draws its ring, and muting it ends it while it stays the dominant speaker.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, waitFor, sleep } = require('./lib/harness');
const { roomName } = require('./lib/scenarios');

function silentMicrophone() {
  window.__syntheticGain = 0;
}

const speaking = (page) => page.evaluate(() => window.conclave.speaking);

test('speaking: only the participant who makes sound is reported speaking', { timeout: 180000 }, async (t) => {
  const h = new Harness('speaking');
  t.after(() => h.close());
  const { url } = await h.startEmbedded();
  await h.launchBrowser();
  const room = roomName('speaking');
  const talker = await h.openPage(url, { name: 'talker', synthetic: true });
  const quiet = [];
  for (const name of ['quiet1', 'quiet2']) {
    quiet.push(await h.openPage(url, { name, synthetic: true, initScript: silentMicrophone }));
  }
  const talkerPid = await h.join(talker, room, 'talker');
  const quietPids = [];
  for (const [i, page] of quiet.entries()) quietPids.push(await h.join(page, room, `quiet${i + 1}`));

  // Everyone hears that the talker speaks, and that it is the dominant speaker.
  for (const page of [...quiet, talker]) {
    await waitFor(`${page.label} to see the talker speaking`, async () => {
      const s = await speaking(page);
      return s.participants.length === 1 && s.participants[0] === talkerPid && s.dominant === talkerPid ? s : null;
    }, { timeoutMs: 30000, intervalMs: 200 });
  }
  // Its tile has the ring on the others' pages, and theirs do not.
  const rings = await quiet[0].evaluate(() =>
    Array.from(document.querySelectorAll('.tile')).map((el) => [el.dataset.participantId, el.classList.contains('speaking')])
  );
  assert.deepEqual(rings.filter(([, on]) => on).map(([pid]) => pid), [talkerPid], JSON.stringify(rings));

  // For a while longer: no silent participant is ever reported speaking.
  await sleep(3000);
  for (const page of [...quiet, talker]) {
    const events = await page.evaluate(() => window.conclave.events.filter((e) => e.id === 'speaking'));
    assert.ok(events.length >= 1);
    for (const e of events) {
      for (const pid of quietPids) assert.ok(!e.participants.includes(pid), `${page.label}: ${pid} reported speaking: ${JSON.stringify(e)}`);
    }
    // Debounced: a steady tone is one start, not a stream of messages.
    assert.ok(events.length <= 3, `${page.label}: ${events.length} speaking messages for one steady voice`);
  }

  // The talker mutes (its microphone now sends silence): it stops speaking within about a
  // second, and stays the dominant speaker.
  await talker.evaluate(() => window.conclave.setAudio(false));
  await waitFor('the talker to stop speaking', async () => {
    const s = await speaking(quiet[0]);
    return s.participants.length === 0 && s.dominant === talkerPid ? s : null;
  }, { timeoutMs: 5000, intervalMs: 100 });
  const ringsAfter = await quiet[0].evaluate(() => document.querySelectorAll('.tile.speaking').length);
  assert.equal(ringsAfter, 0);
});
