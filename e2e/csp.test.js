'use strict';
// The web client under its Content-Security-Policy (issue 11, item 7): the page is served
// with the policy, the policy is enforced (an injected inline script is blocked and reported),
// a call still connects with media both ways and no CSP violation is reported, and another
// site cannot frame the page.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, waitFor, waitMediaFrom, assertMediaGrowing } = require('./lib/harness');
const { roomName, assertNoClientErrors } = require('./lib/scenarios');

/** Record CSP violation events and CSP console messages of `page`, from its first script. */
async function watchCsp(page) {
  page.cspConsole = [];
  page.on('console', (m) => {
    if (/content security policy/i.test(m.text())) page.cspConsole.push(m.text());
  });
  await page.context().addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push({ directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample });
    });
  });
}

async function violations(page) {
  return { events: await page.evaluate(() => window.__csp.slice()), console: page.cspConsole.slice() };
}

test('the web client works under its CSP and cannot be framed', { timeout: 180000 }, async (t) => {
  const h = new Harness('csp');
  t.after(() => h.close());
  if (process.env.E2E_STATIC_DIR) {
    // The overlay serves files from disk without the server's headers.
    t.skip('E2E_STATIC_DIR: the page would not come from the server');
    return;
  }
  const { url, signaling } = await h.startEmbedded();
  await h.launchBrowser();

  // openPage makes each page's own context: add the watcher to it, then reload, so that it
  // runs before the client's first script.
  const room = roomName('csp');
  const ann = await h.openPage(url, { room, name: 'Ann' });
  const ben = await h.openPage(url, { room, name: 'Ben' });
  for (const p of [ann, ben]) {
    await watchCsp(p);
    const res = await p.reload();
    const csp = res.headers()['content-security-policy'] || '';
    assert.match(csp, /script-src 'self'/, `the page is served with its CSP: ${csp}`);
    assert.match(csp, /frame-ancestors 'none'/, csp);
    assert.equal(res.headers()['x-frame-options'], 'DENY');
    await p.waitForFunction(() => window.conclave && typeof window.conclave.state === 'string', null, { timeout: 10000 });
  }

  await h.join(ann, room, 'Ann');
  await h.join(ben, room, 'Ben');
  await waitMediaFrom(ann, [ben.participantId]);
  await waitMediaFrom(ben, [ann.participantId]);
  // The UI's own changes (mute, camera off) run under the policy too.
  // (The buttons' own handlers; a pointer click would land on the tiles in this viewport.)
  const press = (page, ids) => page.evaluate((ids) => ids.forEach((id) => document.getElementById(id).click()), ids);
  await press(ann, ['mic-button', 'cam-button']);
  await waitFor('Ben to see Ann muted', () => ben.evaluate((pid) => {
    const tile = document.querySelector(`.tile[data-participant-id="${CSS.escape(pid)}"]`);
    return tile && tile.dataset.audio === 'off' && tile.dataset.video === 'off';
  }, ann.participantId));
  await press(ann, ['mic-button', 'cam-button']);
  await assertMediaGrowing(ben, [ann.participantId]);
  await assertMediaGrowing(ann, [ben.participantId]);
  await assertNoClientErrors([ann, ben]);
  for (const p of [ann, ben]) {
    assert.deepEqual(await violations(p), { events: [], console: [] }, `${p.label}: no CSP violation during the call`);
  }

  // The policy is really enforced (and the watcher really hears): an inline script injected
  // into Ann's page does not run and is reported.
  await ann.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true';
    document.body.appendChild(s);
  });
  await waitFor('the injected inline script to be reported', async () => (await violations(ann)).events.length > 0);
  assert.equal(await ann.evaluate(() => window.__inlineRan === true), false, 'an inline script ran under the CSP');
  assert.equal((await violations(ann)).events[0].directive, 'script-src-elem');

  // Another origin cannot frame the call page: the frame stays an error page.
  const framer = await h.browser.newPage();
  await framer.setContent(`<iframe id="f" src="${url}/"></iframe>`);
  const frame = await waitFor('the frame to settle', async () => {
    const f = framer.frames().find((x) => x !== framer.mainFrame());
    return f && f.url() !== 'about:blank' && f.url() !== '' ? f : null;
  });
  h.note(`framed client: frame url ${frame.url()}`);
  const framed = await frame.evaluate(() => Boolean(window.conclave)).catch(() => false);
  assert.equal(framed, false, `the call page must not load in a frame (frame url ${frame.url()})`);
  await framer.close();

  assert.equal(signaling.exitCode, null, 'signaling-node still running');
});
