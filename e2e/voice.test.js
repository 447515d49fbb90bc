'use strict';
// A voice channel people trust (issue 13, client items 1, 2, 3 and 5), in one Chromium with
// several fake cameras: the camera really off (never opened when joining with it off, the track
// `ended` when turned off, back without renegotiation), microphone muted vs released, device
// switches mid-call without renegotiation (the others keep decoding), a speaker choice,
// choices remembered, deafen (incoming audio muted, the room told), per-user volume,
// push-to-talk, keyboard shortcuts, join/leave sounds, and a phone-sized page.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, waitFor, waitMediaFrom, assertMediaGrowing, waitEvent, stats, sleep } = require('./lib/harness');
const { roomName, tileState, assertNoClientErrors } = require('./lib/scenarios');

/**
 * Runs in each page before its scripts: records every getUserMedia call and the tracks it
 * returned, and counts `negotiationneeded` on every peer connection (a renegotiation would
 * start there).
 */
function instrument() {
  window.__gum = [];
  window.__gumTracks = [];
  window.__negotiationNeeded = 0;
  const md = navigator.mediaDevices;
  const orig = md.getUserMedia.bind(md);
  md.getUserMedia = async (c) => {
    const entry = { audio: !!(c && c.audio), video: !!(c && c.video), tracks: [] };
    window.__gum.push(entry);
    const s = await orig(c);
    for (const t of s.getTracks()) {
      window.__gumTracks.push(t);
      entry.tracks.push(`${t.kind}:${t.label}`);
    }
    return s;
  };
  const Orig = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Orig(...args);
    pc.addEventListener('negotiationneeded', () => window.__negotiationNeeded++);
    return pc;
  };
  window.RTCPeerConnection.prototype = Orig.prototype;
}

/** Offers and answers sent, negotiationneeded events, and the local SDP: all must stay put. */
function negotiation(page) {
  return page.evaluate(() => ({
    offers: window.__sent.filter((m) => m.id === 'offer').length,
    answers: window.__sent.filter((m) => m.id === 'answer').length,
    needed: window.__negotiationNeeded,
    sdp: window.conclave.pc.localDescription.sdp,
  }));
}

/** The page's own senders: which track each carries (null when none). */
function senders(page) {
  return page.evaluate(() => {
    const out = {};
    for (const tr of window.conclave.pc.getTransceivers()) {
      if (tr.direction !== 'sendonly') continue;
      const kind = tr.receiver.track.kind;
      const t = tr.sender.track;
      out[kind] = t ? { label: t.label, enabled: t.enabled, readyState: t.readyState, deviceId: t.getSettings().deviceId } : null;
    }
    return out;
  });
}

/** The state of every track getUserMedia ever returned to the page. */
function gumTracks(page) {
  return page.evaluate(() => window.__gumTracks.map((t) => ({ kind: t.kind, label: t.label, readyState: t.readyState })));
}

/** Wait until `page` receives growing audio (and, if `energy`, audible audio) from `pid`. */
async function audioFlows(page, pid, { energy = false } = {}) {
  const first = (await stats(page))[pid] || { audioPacketsReceived: 0, audioEnergy: 0 };
  return waitFor(`${page.label}: audio${energy ? ' energy' : ''} from ${pid} to grow`, async () => {
    const s = (await stats(page))[pid];
    if (!s || s.audioPacketsReceived <= first.audioPacketsReceived) return null;
    return !energy || (s.audioEnergy || 0) > (first.audioEnergy || 0) ? s : null;
  }, { timeoutMs: 15000 });
}

/** Press a key with nothing focused (a shortcut is not for a text field). */
async function pressKey(page, key) {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.keyboard.press(key);
}

/** The remote tiles' media elements: muted, volume and speaker. */
function tileAudio(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll('.tile:not(.local)'), (el) => {
      const v = el.querySelector('video');
      return { pid: el.dataset.participantId, muted: v.muted, volume: v.volume, sinkId: v.sinkId };
    })
  );
}

/**
 * A phone page (390x844) in a call with `tiles` tiles: portrait, nothing wider than the
 * screen, every control on screen and apart, inline video, whole tiles (the page scrolls).
 */
async function assertPhoneLayout(pho, tiles) {
  const layout = await pho.evaluate(() => {
    const vw = window.innerWidth;
    const vh = window.innerHeight;
    const buttons = Array.from(document.querySelectorAll('.controls .control'), (b) => b.getBoundingClientRect());
    const overlap = buttons.some((a, i) => buttons.some((b, j) => j > i && a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom));
    return {
      vw,
      scrollWidth: document.documentElement.scrollWidth,
      onScreen: buttons.every((r) => r.left >= 0 && r.right <= vw && r.top >= 0 && r.bottom <= vh && r.width >= 40 && r.height >= 40),
      overlap,
      buttons: buttons.length,
      inline: Array.from(document.querySelectorAll('video'), (v) => v.hasAttribute('playsinline') && v.autoplay),
      localMuted: document.querySelector('.tile.local video').hasAttribute('muted'),
      tilesFit: Array.from(document.querySelectorAll('.tile'), (el) => el.getBoundingClientRect().right <= vw + 0.5),
      // Whole tiles (4:3, nothing cut off by a scroll box): the page scrolls instead.
      tilesWhole: Array.from(document.querySelectorAll('.tile'), (el) => {
        const r = el.getBoundingClientRect();
        const stage = document.querySelector('.stage').getBoundingClientRect();
        return Math.abs(r.width / r.height - 4 / 3) < 0.02 && r.bottom <= stage.bottom + 0.5;
      }),
    };
  });
  assert.equal(layout.vw, 390);
  assert.ok(layout.scrollWidth <= layout.vw, `no sideways scrolling: ${JSON.stringify(layout)}`);
  assert.equal(layout.buttons, 4);
  assert.ok(layout.onScreen && !layout.overlap, `controls fit the screen: ${JSON.stringify(layout)}`);
  assert.ok(layout.inline.length === tiles && layout.inline.every(Boolean), `videos play inline: ${JSON.stringify(layout.inline)}`);
  assert.ok(layout.localMuted && layout.tilesFit.every(Boolean), JSON.stringify(layout));
  assert.ok(layout.tilesWhole.every(Boolean), `tiles shown whole: ${JSON.stringify(layout)}`);
}

test('voice channel: camera off, devices, deafen, volume, push-to-talk, shortcuts, sounds, phone', { timeout: 240000 }, async (t) => {
  const h = new Harness('voice');
  t.after(() => h.close());
  const { url } = await h.startEmbedded();
  // Three fake cameras: fake_device_1 is a depth camera (Y16) that the encoder cannot send,
  // so the switch goes from fake_device_0 (I420) to fake_device_2 (MJPEG).
  await h.launchBrowser({ fakeDevices: 'device-count=3' });
  const room = roomName('voice');

  // Cam joins with the camera off (the form's checkbox, from ?video=0).
  const cam = await h.openPage(url, { room, name: 'Cam', initScript: instrument, params: { video: '0' } });
  const obs = await h.openPage(url, { room, name: 'Obs', initScript: instrument });
  await h.join(cam, room, 'Cam');
  await h.join(obs, room, 'Obs');
  const camId = cam.participantId;
  const obsId = obs.participantId;
  await waitMediaFrom(cam, [obsId]);

  await t.test('joining with the camera off never opens it; on and off again without renegotiation', async () => {
    const gum = await cam.evaluate(() => window.__gum);
    assert.ok(gum.length >= 1, 'the microphone was opened');
    assert.deepEqual(gum.filter((c) => c.video), [], `no getUserMedia call asked for video: ${JSON.stringify(gum)}`);
    assert.deepEqual((await gumTracks(cam)).filter((x) => x.kind === 'video'), [], 'no camera track was ever started');
    assert.equal((await senders(cam)).video, null, 'the video sender has no track');
    const joinMsg = await cam.evaluate(() => window.__sent.find((m) => m.id === 'join'));
    assert.deepEqual([joinMsg.audio, joinMsg.video], [true, false]);
    assert.equal(await cam.getAttribute('#cam-button', 'aria-pressed'), 'true', 'the camera button shows off');
    assert.equal(await cam.isDisabled('#cam-button'), false, 'a camera can be turned on');
    // Obs hears Cam and shows her camera off.
    await audioFlows(obs, camId);
    assert.equal((await tileState(obs, camId)).video, 'off');

    const before = await negotiation(cam);
    assert.equal(before.offers, 1);
    // Camera on: opened now, and Obs decodes it; no offer, no answer, no negotiationneeded.
    await cam.click('#cam-button');
    await waitFor('Cam: a camera track on the sender', async () => ((await senders(cam)).video || {}).readyState === 'live');
    const camGum = (await cam.evaluate(() => window.__gum)).filter((c) => c.video);
    assert.equal(camGum.length, 1, 'the camera opened once');
    assert.equal(camGum[0].audio, false, 'only the camera was asked for');
    await waitEvent(obs, 'participantState', { participantId: camId, video: true });
    await waitMediaFrom(obs, [camId]);
    await assertMediaGrowing(obs, [camId]);
    assert.deepEqual(await negotiation(cam), before, 'camera on renegotiated');

    // Camera off: the device is stopped (the track ends), the sender has no track.
    await cam.click('#cam-button');
    await waitFor('Cam: the camera track to end', async () => {
      const v = (await gumTracks(cam)).filter((x) => x.kind === 'video');
      return v.length === 1 && v[0].readyState === 'ended';
    });
    assert.equal((await senders(cam)).video, null);
    await waitEvent(obs, 'participantState', { participantId: camId, video: false });
    const localTile = await cam.evaluate(() => document.querySelector('.tile.local').classList.contains('no-video'));
    assert.equal(localTile, true, 'the preview shows the placeholder');
    assert.deepEqual(await negotiation(cam), before, 'camera off renegotiated');
  });

  await t.test('microphone: muted is a disabled track, "Leave microphone" releases the device', async () => {
    await cam.evaluate(() => window.conclave.setAudio(false));
    const muted = (await senders(cam)).audio;
    assert.deepEqual([muted.enabled, muted.readyState], [false, 'live'], 'muted: the device stays open');
    await waitEvent(obs, 'participantState', { participantId: camId, audio: false });
    const before = await negotiation(cam);
    await cam.evaluate(() => document.getElementById('leave-mic-button').click());
    await waitFor('Cam: the microphone released', async () => (await senders(cam)).audio === null);
    assert.ok((await gumTracks(cam)).filter((x) => x.kind === 'audio').every((x) => x.readyState === 'ended'), 'every microphone track ended');
    assert.equal(await cam.isDisabled('#leave-mic-button'), true);
    assert.equal(await cam.evaluate(() => document.querySelector('#mic-button .control-label').textContent), 'Unmute mic');
    // Unmute opens it again, on the same sender, and Obs hears it.
    await cam.click('#mic-button');
    await waitFor('Cam: a live microphone again', async () => {
      const a = (await senders(cam)).audio;
      return a && a.readyState === 'live' && a.enabled;
    });
    await waitEvent(obs, 'participantState', { participantId: camId, audio: true });
    await audioFlows(obs, camId, { energy: true });
    assert.deepEqual(await negotiation(cam), before, 'the microphone came back without renegotiation');
  });

  await t.test('switching camera and microphone mid-call: the others keep decoding, no renegotiation', async () => {
    await cam.evaluate(() => window.conclave.setVideo(true));
    await waitMediaFrom(obs, [camId]);
    const devices = await cam.evaluate(() => window.conclave.devices);
    assert.deepEqual(devices.videoinput.map((d) => d.label), ['fake_device_0', 'fake_device_1', 'fake_device_2'], 'the fake cameras listed');
    assert.equal((await senders(cam)).video.label, 'fake_device_0');
    const before = await negotiation(cam);
    await cam.evaluate(() => (document.getElementById('settings').open = true));
    // The user picks the other camera and another microphone in Settings.
    await cam.selectOption('#cam-select', { label: 'fake_device_2' });
    await waitFor('Cam: sending fake_device_2', async () => ((await senders(cam)).video || {}).label === 'fake_device_2');
    const videoTracks = (await gumTracks(cam)).filter((x) => x.kind === 'video');
    assert.deepEqual(videoTracks.map((x) => x.readyState), ['ended', 'ended', 'live'], 'the old camera was stopped');
    await assertMediaGrowing(obs, [camId]);
    await cam.selectOption('#mic-select', { label: 'Fake Audio Input 1' });
    await waitFor('Cam: sending Fake Audio Input 1', async () => ((await senders(cam)).audio || {}).label === 'Fake Audio Input 1');
    assert.equal((await senders(cam)).audio.enabled, true, 'the microphone stays unmuted');
    await audioFlows(obs, camId);
    await assertMediaGrowing(obs, [camId]);
    assert.deepEqual(await negotiation(cam), before, 'a device switch renegotiated');
    assert.equal(await cam.inputValue('#cam-select'), (await senders(cam)).video.deviceId, 'the picker shows the camera in use');

    // Obs moves sound to another speaker: every tile plays there.
    const speakers = await obs.evaluate(() => window.conclave.devices.audiooutput);
    const speaker = speakers.find((d) => d.label === 'Fake Audio Output 1');
    assert.ok(speaker, `a second speaker is listed: ${JSON.stringify(speakers)}`);
    await obs.evaluate(() => (document.getElementById('settings').open = true));
    await obs.selectOption('#speaker-select', speaker.deviceId);
    await waitFor('Obs: the tiles on the chosen speaker', async () => (await tileAudio(obs)).every((x) => x.sinkId === speaker.deviceId));
    h.note(`speaker ${speaker.deviceId}; cam prefs ${await cam.evaluate(() => localStorage.getItem('conclave.prefs'))}`);
  });

  await t.test('deafen, per-user volume, sounds, and choices remembered across a rejoin', async () => {
    // A phone joins: Obs hears the join sound, and it plays in the chosen speaker's context.
    // Its remembered devices were unplugged since its last call: it joins with the defaults.
    const unplugged = () => localStorage.setItem('conclave.prefs', JSON.stringify({ videoInput: 'unplugged-camera', audioInput: 'unplugged-mic' }));
    const pho = await h.openPage(url, { room, name: 'Pho', phone: true, initScript: unplugged });
    await h.join(pho, room, 'Pho');
    const phoId = pho.participantId;
    const phoSends = await senders(pho);
    assert.deepEqual([phoSends.video.label, phoSends.video.readyState, phoSends.audio.readyState], ['fake_device_0', 'live', 'live'], JSON.stringify(phoSends));
    await waitFor('Obs: a join sound for Pho', () => obs.evaluate((id) => window.conclave.cues.some((c) => c.kind === 'join' && c.participantId === id), phoId));
    const cue = await obs.evaluate(() => window.conclave.cues.at(-1));
    assert.equal(cue.contextState, 'running', 'the sound played (its AudioContext runs)');
    const speakerId = (await tileAudio(obs)).find((x) => x.pid === camId).sinkId;
    await waitFor('Obs: Pho\'s new tile on the chosen speaker too', async () => (await tileAudio(obs)).find((x) => x.pid === phoId)?.sinkId === speakerId);

    // Per-user volume: Obs turns Cam down with the slider on Cam's tile.
    const slider = `.tile[data-participant-id="${camId}"] .tile-volume`;
    await obs.$eval(slider, (el) => {
      el.value = '30';
      el.dispatchEvent(new Event('input', { bubbles: true }));
    });
    assert.equal((await tileAudio(obs)).find((x) => x.pid === camId).volume, 0.3);
    assert.equal((await tileAudio(obs)).find((x) => x.pid === phoId).volume, 1, 'only Cam is quieter');

    // Deafen with the keyboard shortcut: every tile muted, the microphone muted, the room told.
    await pressKey(obs, 'd');
    await waitFor('Obs deafened', () => obs.evaluate(() => window.conclave.deafened));
    assert.ok((await tileAudio(obs)).every((x) => x.muted), 'every remote tile is muted');
    // Obs hears nothing: Cam's audio packets keep arriving, but no sound energy is played out.
    const start = (await stats(obs))[camId];
    const deaf0 = await waitFor('Obs: 25 more audio packets from Cam', async () => {
      const s = (await stats(obs))[camId];
      return s.audioPacketsReceived >= start.audioPacketsReceived + 25 ? s : null;
    });
    const deaf1 = await waitFor('Obs: 100 more audio packets from Cam', async () => {
      const s = (await stats(obs))[camId];
      return s.audioPacketsReceived >= deaf0.audioPacketsReceived + 100 ? s : null;
    });
    h.note(`deafened: energy from Cam ${deaf0.audioEnergy} -> ${deaf1.audioEnergy}`);
    assert.ok(deaf1.audioEnergy - deaf0.audioEnergy < 1e-6, `deafened Obs played Cam's audio (energy ${deaf0.audioEnergy} -> ${deaf1.audioEnergy})`);
    assert.equal(await obs.evaluate(() => window.conclave.audio), false, 'deafen mutes the microphone');
    assert.equal((await senders(obs)).audio.enabled, false);
    for (const p of [cam, pho]) {
      await waitEvent(p, 'participantState', { participantId: obsId, deafened: true });
      await waitFor(`${p.label}: Obs shown deafened`, async () => (await p.getAttribute(`#participant-list li[data-participant-id="${obsId}"]`, 'data-deafened')) === 'on');
    }
    assert.equal(await cam.isVisible(`.tile[data-participant-id="${obsId}"] .badge-deaf`), true, 'Cam sees the deafened badge');
    assert.equal(await obs.textContent('#deafen-button .control-label'), 'Undeafen');

    // Cam leaves and joins again while Obs is deafened: no sounds, her new tile is muted too,
    // and Cam comes back with the devices she chose (remembered).
    const cuesBefore = await obs.evaluate(() => window.conclave.cues.length);
    await cam.evaluate(() => window.conclave.leave());
    await waitEvent(obs, 'participantLeft', { participantId: camId });
    // The phone with two tiles, each as wide as the screen.
    await waitFor('Pho: Cam\'s tile gone', () => pho.evaluate(() => document.querySelectorAll('.tile').length === 2));
    await assertPhoneLayout(pho, 2);
    await cam.evaluate(([r, n]) => window.conclave.join(r, n, { video: true }), [room, 'Cam']);
    const camId2 = await cam.evaluate(() => window.conclave.participantId);
    cam.participantId = camId2;
    assert.equal((await senders(cam)).video.label, 'fake_device_2', 'the chosen camera is remembered');
    assert.equal((await senders(cam)).audio.label, 'Fake Audio Input 1', 'the chosen microphone is remembered');
    await waitMediaFrom(obs, [camId2]);
    const camTile2 = (await tileAudio(obs)).find((x) => x.pid === camId2);
    assert.equal(camTile2.muted, true, 'a tile that appears while deafened is muted');
    assert.equal(camTile2.volume, 0.3, 'Cam\'s volume is remembered for her user');
    assert.equal(await obs.evaluate(() => window.conclave.cues.length), cuesBefore, 'no sounds while deafened');

    // Undeafen: sound back, at each user's volume, and the microphone back on.
    await obs.click('#deafen-button');
    await waitFor('Obs undeafened', async () => !(await obs.evaluate(() => window.conclave.deafened)));
    const after = await tileAudio(obs);
    assert.ok(after.every((x) => !x.muted), `every tile plays: ${JSON.stringify(after)}`);
    assert.equal(after.find((x) => x.pid === camId2).volume, 0.3);
    await audioFlows(obs, camId2, { energy: true }); // heard again
    assert.equal(await obs.evaluate(() => window.conclave.audio), true, 'the microphone is back as it was');
    const undeaf = await waitFor('Cam: Obs undeafened', () =>
      cam.evaluate((id) => window.conclave.events.filter((e) => e.id === 'participantState' && e.participantId === id).at(-1), obsId)
        .then((e) => (e && !e.deafened && e.audio ? e : null))
    );
    assert.equal('deafened' in undeaf, false, 'not deafened: the field is left out');
    await audioFlows(cam, obsId, { energy: true });

    // Sounds off (remembered): Pho's leave plays nothing.
    await obs.evaluate(() => (document.getElementById('settings').open = true));
    await obs.uncheck('#sounds-toggle');
    const prefs = JSON.parse(await obs.evaluate(() => localStorage.getItem('conclave.prefs')));
    assert.equal(prefs.sounds, false);
    assert.equal(prefs.audioOutput, speakerId);
    const cuesOff = await obs.evaluate(() => window.conclave.cues.length);

    // Meanwhile the phone, with three tiles; a tap mutes.
    await waitMediaFrom(pho, [obsId, camId2]);
    await assertPhoneLayout(pho, 3);
    await pho.tap('#mic-button');
    await waitEvent(obs, 'participantState', { participantId: phoId, audio: false });

    await pho.evaluate(() => window.conclave.leave());
    await waitEvent(obs, 'participantLeft', { participantId: phoId });
    assert.equal(await obs.evaluate(() => window.conclave.cues.length), cuesOff, 'sounds off: no leave sound');
    await assertNoClientErrors([pho]);
    await obs.check('#sounds-toggle');
  });

  await t.test('keyboard shortcuts and push-to-talk', async () => {
    const camId2 = cam.participantId;
    // M mutes and unmutes; typing in a field is not a shortcut.
    await pressKey(cam, 'm');
    await waitEvent(obs, 'participantState', { participantId: camId2, audio: false });
    await pressKey(cam, 'm');
    await waitFor('Cam unmuted by M', () => cam.evaluate(() => window.conclave.audio));
    await cam.focus('#mic-select');
    await cam.keyboard.press('m');
    assert.equal(await cam.evaluate(() => window.conclave.audio), true, 'M in a picker is not a shortcut');
    // V: camera off and on.
    await pressKey(cam, 'v');
    await waitEvent(obs, 'participantState', { participantId: camId2, video: false });
    await pressKey(cam, 'v');
    await waitFor('Cam: camera on by V', async () => ((await senders(cam)).video || {}).readyState === 'live');

    // Push-to-talk on T (picked in Settings): silent until T is held.
    await cam.evaluate(() => (document.getElementById('settings').open = true));
    await cam.check('#ptt-toggle');
    await cam.click('#ptt-key-button');
    await cam.keyboard.press('t');
    assert.equal(await cam.evaluate(() => JSON.parse(localStorage.getItem('conclave.prefs')).pttKey), 'KeyT');
    assert.equal(await cam.textContent('#ptt-key-button'), 'T');
    await cam.evaluate(() => document.activeElement && document.activeElement.blur());
    assert.equal((await senders(cam)).audio.enabled, false, 'push-to-talk: silent without the key');
    const before = await negotiation(cam);
    // What Obs hears: sound while T is held, silence (a disabled track) once it is released.
    const packetsAfter = async (base, n) =>
      waitFor(`Obs: ${n} more audio packets from Cam`, async () => {
        const s = (await stats(obs))[camId2];
        return s.audioPacketsReceived >= base.audioPacketsReceived + n ? s : null;
      });
    const held0 = (await stats(obs))[camId2];
    await cam.keyboard.down('t');
    assert.equal((await senders(cam)).audio.enabled, true, 'talking while T is held');
    assert.equal(await cam.textContent('#mic-button .control-label'), 'Talking');
    const held1 = await packetsAfter(held0, 100); // 2 s of 20 ms packets
    await cam.keyboard.up('t');
    assert.equal((await senders(cam)).audio.enabled, false, 'silent again once T is released');
    // By time, not by packets: a disabled track is silence, and with Opus DTX silence is one
    // packet every 400 ms.
    await sleep(1000); // what was on its way has played
    const quiet0 = (await stats(obs))[camId2];
    await sleep(2000);
    const quiet1 = (await stats(obs))[camId2];
    const heard = held1.audioEnergy - held0.audioEnergy;
    const leaked = quiet1.audioEnergy - quiet0.audioEnergy;
    h.note(`push-to-talk: energy ${heard} while held, ${leaked} after release`);
    assert.ok(heard > 0, `Obs heard Cam while T was held (energy ${heard})`);
    assert.ok(leaked < heard / 100, `Obs heard (almost) nothing once T was up (energy ${leaked} vs ${heard})`);
    assert.deepEqual(await negotiation(cam), before, 'push-to-talk renegotiated');
    await cam.uncheck('#ptt-toggle');
    assert.equal((await senders(cam)).audio.enabled, true, 'push-to-talk off: the microphone is live again');
  });

  await assertNoClientErrors([cam, obs]);
});
