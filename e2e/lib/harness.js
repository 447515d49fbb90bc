'use strict';
// Shared helpers for Conclave's browser end-to-end tests: start the servers under test,
// launch one headless Chromium per test file, open participant pages, poll with deadlines.
//
// Every process started here is remembered by PID and killed (SIGTERM, then SIGKILL) by
// `Harness.close()`, and as a last resort on process exit.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const http = require('node:http');
const { chromium } = require('playwright-core');

const REPO = path.resolve(__dirname, '..', '..');
const SIGNALING_BIN = process.env.CONCLAVE_SIGNALING_BIN || path.join(REPO, 'target/debug/signaling-node');
const MEDIA_BIN = process.env.CONCLAVE_MEDIA_BIN || path.join(REPO, 'target/debug/media-node');
// The internal link's shared secret for every process a test starts (media nodes refuse
// unauthenticated links outside --dev).
const LINK_SECRET = 'e2e-link-secret-0123456789abcdef0123456789';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const LOG_DIR = process.env.E2E_LOG_DIR || path.join(__dirname, '..', 'logs');
const RUST_LOG = process.env.E2E_RUST_LOG || process.env.RUST_LOG || 'info';

// Flags from /work/shared/TESTING.md.
const BASE_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];
const FAKE_UI_FLAG = '--use-fake-ui-for-media-stream';
const SHOW_IPS_FLAG = '--disable-features=WebRtcHideLocalIpsWithMdns';

// ------------------------------------------------------------------------------------------
// Last-resort cleanup: children still alive when node exits are killed by PID.
const live = new Map(); // pid -> ChildProcess
process.on('exit', () => {
  for (const [pid, child] of live) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {}
    }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => process.exit(130));
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Like sleep, but does not keep the process alive (for deadlines raced against work). */
function deadline(ms) {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/**
 * Poll `fn` until it returns a truthy value (returned) or the deadline passes (throws with
 * `what` and the last value/error seen).
 */
async function waitFor(what, fn, { timeoutMs = 20000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr;
  for (let i = 0; ; i++) {
    try {
      last = await fn();
      lastErr = undefined;
      if (last) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastErr ? `last error: ${lastErr.message}` : `last value: ${safeJson(last)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${detail})`);
    }
    await sleep(intervalMs);
  }
}

function safeJson(v) {
  try {
    return JSON.stringify(v);
  } catch (_) {
    return String(v);
  }
}

function httpGet(url, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// Content types of the overlay, as the server's table (signaling-node/src/web_client.rs) has them.
const OVERLAY_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/** The file under `dir` that `pathname` names (`/` is index.html), or null: not there, or outside `dir`. */
function overlayFile(dir, pathname) {
  let rel;
  try {
    rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname).replace(/^\/+/, '');
  } catch (_) {
    return null;
  }
  const root = path.resolve(dir);
  const file = path.resolve(root, rel);
  const type = OVERLAY_TYPES[path.extname(file)];
  if (!type || !file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return null;
  return { file, type };
}

/**
 * Development aid (env E2E_STATIC_DIR=path/to/signaling-node/static): serve the web client
 * from disk in front of the real server, so client edits can be tested without rebuilding
 * the binary (it embeds the files). Every file under `dir` is served from disk (so it hides a
 * file the binary's table lacks: signaling-node's tests/it/web_client.rs checks the table);
 * everything else, WebSocket upgrades included, is passed through to `target`. Runs inside the test process.
 */
async function startStaticOverlay(target, dir) {
  const net = require('node:net');
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    const f = req.method === 'GET' ? overlayFile(dir, u.pathname) : null;
    if (f) {
      res.writeHead(200, { 'content-type': f.type, 'cache-control': 'no-cache' });
      res.end(fs.readFileSync(f.file));
      return;
    }
    const up = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('upgrade', (req, socket, head) => {
    const up = net.connect(Number(t.port), t.hostname, () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(raw + '\r\n');
      if (head && head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  server.unref();
  return { url: `http://127.0.0.1:${server.address().port}`, server };
}

class Harness {
  /** @param {string} name used for log file names */
  constructor(name) {
    this.name = name;
    this.children = [];
    this.browserServer = null;
    this.browser = null;
    this.browserServers = [];
    this.browsers = [];
    this.pages = [];
    fs.mkdirSync(LOG_DIR, { recursive: true });
    this.browserLog = this.logStream('browser');
  }

  logPath(suffix) {
    return path.join(LOG_DIR, `${this.name}-${suffix}.log`);
  }

  logStream(suffix) {
    return fs.createWriteStream(this.logPath(suffix), { flags: 'w' });
  }

  note(line) {
    this.writeLog(`${new Date().toISOString()} [test] ${line}\n`);
  }

  writeLog(text) {
    if (!this.browserLog.writableEnded) this.browserLog.write(text);
  }

  /**
   * Spawn a server binary, capture stdout+stderr to a log file and wait until one of its
   * lines matches `readyRe`. `env`: extra environment variables. Returns { child, match, logPath }.
   */
  async startProcess(label, bin, args, readyRe, timeoutMs = 30000, env = {}) {
    if (!fs.existsSync(bin)) throw new Error(`${label} binary not found: ${bin}`);
    const logPath = this.logPath(label);
    const log = fs.createWriteStream(logPath, { flags: 'w' });
    log.write(`# ${bin} ${args.join(' ')}\n`);
    const child = spawn(bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: Object.assign({}, process.env, { RUST_LOG, NO_COLOR: '1', RUST_BACKTRACE: '1', CONCLAVE_LINK_SECRET: LINK_SECRET }, env),
    });
    live.set(child.pid, child);
    this.children.push({ label, child, logPath });
    const exited = new Promise((resolve) =>
      child.once('exit', (code, sig) => {
        this.note(`${label} pid=${child.pid} exited (code ${code}, signal ${sig})`);
        resolve({ code, sig });
      })
    );
    child.exited = exited;
    let matched = null;
    let onMatch;
    const ready = new Promise((resolve) => (onMatch = resolve));
    const scan = (stream) => {
      let buf = '';
      stream.on('data', (d) => {
        log.write(d);
        buf += d.toString();
        let idx;
        while ((idx = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, idx);
          buf = buf.slice(idx + 1);
          const m = !matched && line.match(readyRe);
          if (m) {
            matched = m;
            onMatch(m);
          }
        }
      });
    };
    scan(child.stdout);
    scan(child.stderr);
    const timeout = deadline(timeoutMs).then(() => 'timeout');
    const r = await Promise.race([ready, exited.then((e) => ({ exited: e })), timeout]);
    if (r === 'timeout') throw new Error(`${label} printed no line matching ${readyRe} within ${timeoutMs} ms (log: ${logPath})`);
    if (r && r.exited) {
      throw new Error(`${label} exited (code ${r.exited.code}, signal ${r.exited.sig}) before it was ready (log: ${logPath}):\n${tail(logPath)}`);
    }
    return { child, match: r, logPath };
  }

  /**
   * Embedded topology: one signaling-node with the media node in-process.
   * Options: `dev` (default true: --dev, which mints tokens at /dev/token), `args` (extra
   * flags), `label` (log file name). Returns { url, udp: {host, port} | null, signaling }.
   */
  async startEmbedded({ dev = true, args = [], label = 'signaling' } = {}) {
    const { child, match, logPath } = await this.startProcess(
      label,
      SIGNALING_BIN,
      ['--listen', '127.0.0.1:0', '--internal-listen', '127.0.0.1:0', ...(dev ? ['--dev'] : []), '--udp-listen', '127.0.0.1:0', ...args],
      /listening\b.*?\burl=(http:\/\/[^\s"]+)(?:.*?\budp=([0-9.]+):(\d+))?/
    );
    if (label === 'signaling') {
      this.signaling = child;
      this.signalingLog = logPath;
    }
    const url = match[1].replace(/\/$/, '');
    const udp = match[3] ? { host: match[2], port: Number(match[3]) } : null;
    this.note(`embedded ${label} pid=${child.pid} url=${url} udp=${udp ? udp.host + ':' + udp.port : '?'}`);
    return { url: await this.clientUrl(url), udp, signaling: child };
  }

  /** The URL pages open: the server's, or a static overlay on it (E2E_STATIC_DIR). */
  async clientUrl(url) {
    if (!process.env.E2E_STATIC_DIR) return url;
    const overlay = await startStaticOverlay(url, process.env.E2E_STATIC_DIR);
    (this.overlays = this.overlays || []).push(overlay.server);
    this.note(`client served from ${process.env.E2E_STATIC_DIR} at ${overlay.url} (in front of ${url})`);
    return overlay.url;
  }

  /** Two-process topology: media-node, then signaling-node linked to it. */
  async startSplit() {
    const media = await this.startProcess(
      'media',
      MEDIA_BIN,
      ['--listen', '127.0.0.1:0', '--udp-listen', '127.0.0.1:0'],
      /listening\b.*?\binternal=(http:\/\/[^\s"]+).*?\budp=([0-9.]+):(\d+)/
    );
    const internal = media.match[1].replace(/\/$/, '');
    const linkUrl = internal.replace(/^http:/, 'ws:') + '/internal/link';
    const sig = await this.startProcess(
      'signaling',
      SIGNALING_BIN,
      ['--listen', '127.0.0.1:0', '--internal-listen', '127.0.0.1:0', '--dev', '--media-node', linkUrl],
      /listening\b.*?\burl=(http:\/\/[^\s"]+)/
    );
    this.signaling = sig.child;
    this.signalingLog = sig.logPath;
    this.media = media.child;
    this.mediaLog = media.logPath;
    const url = sig.match[1].replace(/\/$/, '');
    const udp = { host: media.match[2], port: Number(media.match[3]) };
    this.note(`media pid=${media.child.pid} internal=${internal} udp=${udp.host}:${udp.port}; signaling pid=${sig.child.pid} url=${url}`);
    return { url: await this.clientUrl(url), udp, signaling: sig.child, media: media.child };
  }

  /**
   * A whole local cluster through `deploy/local-cluster up` (Redis, nginx, `signaling`
   * signaling nodes, `media` media nodes; coturn with `turn`). `env` reaches every node (e.g. CONCLAVE_RESUME_GRACE).
   * Returns cluster.json ({ url, redis, signaling: [{id, url, pid}], media: [...], redisPid, ... });
   * `close()` runs `down`, which stops exactly those processes.
   */
  async startCluster({ signaling = 2, media = 3, env = {}, capacity = 500, turn = false } = {}) {
    const { execFile } = require('node:child_process');
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), `conclave-${this.name}-`));
    const script = path.join(REPO, 'deploy', 'local-cluster');
    const binDir = path.dirname(SIGNALING_BIN);
    const run = (args) =>
      new Promise((resolve, reject) => {
        execFile(script, args, { env: Object.assign({}, process.env, { RUST_LOG }, env), timeout: 90000 }, (err, stdout, stderr) => {
          this.writeLog(`# local-cluster ${args.join(' ')}\n${stdout}${stderr}`);
          if (err) reject(new Error(`local-cluster ${args[0]} failed: ${err.message}\n${stdout}${stderr}`));
          else resolve(stdout);
        });
      });
    let lastErr;
    for (let attempt = 0; attempt < 5; attempt++) {
      // A random base port; the script checks each port is free.
      const base = 20000 + 100 * Math.floor(Math.random() * 400);
      try {
        await run(['up', '--dir', dir, '--base-port', String(base), '--signaling', String(signaling), '--media', String(media), '--capacity', String(capacity), '--bin-dir', binDir, ...(turn ? ['--turn'] : [])]);
        this.clusterDir = dir;
        this.closers = (this.closers || []).concat(() => run(['down', '--dir', dir]).catch((e) => this.note(String(e))));
        const cluster = JSON.parse(fs.readFileSync(path.join(dir, 'cluster.json'), 'utf8'));
        this.note(`cluster up in ${dir}: ${JSON.stringify(cluster)}`);
        cluster.dir = dir;
        return cluster;
      } catch (err) {
        lastErr = err;
        this.note(`cluster start attempt ${attempt + 1} failed: ${err.message}`);
      }
    }
    throw lastErr;
  }

  /**
   * Launch Chromium. `mdnsPrivacy`: keep Chromium's default of hiding local IPs behind mDNS
   * names (and do not auto-grant camera/microphone, which would lift that privacy).
   * `fakeDevices`: options of the fake devices, all in the one flag value (e.g.
   * 'device-count=2' for two cameras).
   */
  async launchBrowser({ mdnsPrivacy = false, autoplayPolicy = 'no-user-gesture-required', fakeDevices = '', executablePath = CHROMIUM, extraArgs = [] } = {}) {
    const args = BASE_FLAGS.map((f) => {
      if (f.startsWith('--autoplay-policy=')) return `--autoplay-policy=${autoplayPolicy}`;
      if (f === '--use-fake-device-for-media-stream' && fakeDevices) return `${f}=${fakeDevices}`;
      return f;
    });
    if (!mdnsPrivacy) args.push(FAKE_UI_FLAG, SHOW_IPS_FLAG);
    args.push(...extraArgs);
    const server = await chromium.launchServer({
      executablePath,
      headless: true,
      args,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    // A test may launch several (e.g. one per network namespace): close() ends them all;
    // `browser` stays the first, the default of openPage.
    this.browserServers.push(server);
    const proc = server.process();
    if (proc && proc.pid) live.set(proc.pid, proc);
    this.note(`chromium pid=${proc && proc.pid} executable=${executablePath} flags=${args.join(' ')}`);
    const browser = await chromium.connect(server.wsEndpoint());
    this.browsers.push(browser);
    if (!this.browser) {
      this.browserServer = server;
      this.browser = browser;
    }
    return browser;
  }

  /**
   * Open a participant page (own browser context) on the client, not yet joined.
   * `synthetic`: replace getUserMedia by a canvas + oscillator stream (no device permission).
 * `noDevices`: getUserMedia fails (NotFoundError), as on a machine with no camera or mic.
 * `passive`: do not evaluate anything in the page after loading it. Every Playwright
 *   evaluation counts as a user gesture (sticky activation, which lifts autoplay blocking);
 *   use `quietEval` on such a page until a real gesture is meant.
 * `phone`: a phone's portrait screen (390x844, touch, mobile viewport) instead of 800x600.
 * `initScript`: a function run in the page before its own scripts (as addInitScript).
 * `browser`: which of the launched browsers (default: the first).
   */
  async openPage(baseUrl, { room, name, width = 320, height = 240, synthetic = false, noDevices = false, passive = false, phone = false, initScript = null, params: extraParams = {}, browser = this.browser } = {}) {
    const context = await browser.newContext(
      phone ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 } : { viewport: { width: 800, height: 600 } }
    );
    const page = await context.newPage();
    page.label = name || 'page';
    page.on('console', (m) => this.writeLog(`${new Date().toISOString()} [${name} console.${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => {
      page.uncaughtErrors = (page.uncaughtErrors || []).concat(String(e));
      this.writeLog(`${new Date().toISOString()} [${name} pageerror] ${e.stack || e}\n`);
    });
    // Record what the client sends, for assertions and debugging.
    await page.addInitScript(() => {
      window.__sent = [];
      const orig = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        try {
          window.__sent.push(JSON.parse(data));
        } catch (_) {}
        return orig.call(this, data);
      };
    });
    if (synthetic) await page.addInitScript(installSyntheticMedia);
    if (initScript) await page.addInitScript(initScript);
    if (noDevices) {
      await page.addInitScript(() => {
        if (navigator.mediaDevices) {
          navigator.mediaDevices.getUserMedia = async () => {
            throw new DOMException('Requested device not found', 'NotFoundError');
          };
        }
      });
    }
    const q = new URLSearchParams({ width: String(width), height: String(height) });
    if (room != null) q.set('room', room);
    if (name != null) q.set('name', name);
    for (const [k, v] of Object.entries(extraParams)) q.set(k, v);
    await page.goto(`${baseUrl}/?${q}`);
    if (!passive) await page.waitForFunction(() => window.conclave && typeof window.conclave.state === 'string', null, { timeout: 10000 });
    this.pages.push(page);
    return page;
  }

  /** Join through the page's test hook; resolves with timing info when `joined` arrived. */
  async join(page, room, name) {
    const t0 = Date.now();
    this.note(`${name} joining ${room}`);
    await page.evaluate(([r, n]) => window.conclave.join(r, n), [room, name]);
    const pid = await page.evaluate(() => window.conclave.participantId);
    page.participantId = pid;
    page.joinStartedAt = t0;
    this.note(`${name} joined as ${pid} after ${Date.now() - t0} ms`);
    return pid;
  }

  async close() {
    const t0 = Date.now();
    for (const page of this.pages) {
      try {
        await page.context().close();
      } catch (_) {}
    }
    for (const browser of this.browsers) await withTimeout(browser.close(), 5000).catch(() => {});
    for (const server of this.browserServers) {
      await withTimeout(server.close(), 5000).catch(() => {});
      const proc = server.process();
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        await withTimeout(server.kill(), 5000).catch(() => {});
      }
    }
    this.note(`browser closed after ${Date.now() - t0} ms`);
    for (const closer of this.closers || []) await closer();
    for (const o of this.overlays || []) o.close();
    // Servers: reverse start order, SIGTERM then SIGKILL, by PID.
    for (const { label, child } of this.children.slice().reverse()) {
      const how = await stopChild(child);
      this.note(`${label} pid=${child.pid} ${how} after ${Date.now() - t0} ms`);
    }
    await new Promise((r) => this.browserLog.end(r));
  }
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    live.delete(child.pid);
    return `had already exited (code ${child.exitCode}, signal ${child.signalCode})`;
  }
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch (_) {}
  let r = await Promise.race([child.exited, deadline(5000).then(() => 'timeout')]);
  let how = 'stopped by SIGTERM';
  if (r === 'timeout') {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch (_) {}
    await Promise.race([child.exited, deadline(2000)]);
    how = 'killed by SIGKILL (ignored SIGTERM for 5 s)';
  }
  live.delete(child.pid);
  // A grandchild holding the pipes must not keep the test process alive.
  child.stdout.destroy();
  child.stderr.destroy();
  return how;
}

function withTimeout(p, ms) {
  return Promise.race([p, deadline(ms).then(() => Promise.reject(new Error('timeout')))]);
}

function tail(file, lines = 40) {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(-lines).join('\n');
  } catch (_) {
    return '';
  }
}

// Runs in the page (addInitScript): getUserMedia returns a canvas video + oscillator audio
// stream, so no device permission is ever granted (Chromium then keeps mDNS host candidates).
function installSyntheticMedia() {
  const md = navigator.mediaDevices;
  if (!md) return;
  md.getUserMedia = async (constraints) => {
    const out = new MediaStream();
    const wantVideo = constraints && constraints.video;
    const wantAudio = constraints && constraints.audio;
    if (wantVideo) {
      const w = (wantVideo.width && wantVideo.width.ideal) || 320;
      const h = (wantVideo.height && wantVideo.height.ideal) || 240;
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d');
      let n = 0;
      const draw = () => {
        n++;
        ctx.fillStyle = `hsl(${(n * 7) % 360}, 70%, 45%)`;
        ctx.fillRect(0, 0, w, h);
        ctx.fillStyle = '#fff';
        ctx.font = '24px sans-serif';
        ctx.fillText(`frame ${n}`, 10, h / 2);
      };
      draw();
      setInterval(draw, 66);
      for (const t of canvas.captureStream(15).getVideoTracks()) out.addTrack(t);
    }
    if (wantAudio) {
      const ac = new AudioContext();
      const osc = ac.createOscillator();
      osc.frequency.value = 440;
      // `window.__syntheticGain = 0` (an init script) makes it a silent microphone.
      const gain = ac.createGain();
      gain.gain.value = window.__syntheticGain === undefined ? 1 : window.__syntheticGain;
      const dest = ac.createMediaStreamDestination();
      osc.connect(gain);
      gain.connect(dest);
      osc.start();
      ac.resume().catch(() => {});
      for (const t of dest.stream.getAudioTracks()) out.addTrack(t);
    }
    return out;
  };
}

// ------------------------------------------------------------------------------------------
// Page-level helpers

/** Evaluate `expression` in the page without a user gesture (CDP, userGesture: false). */
async function quietEval(page, expression) {
  if (!page.quietCdp) page.quietCdp = await page.context().newCDPSession(page);
  const r = await page.quietCdp.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true, userGesture: false });
  if (r.exceptionDetails) throw new Error(`quietEval(${expression}): ${r.exceptionDetails.exception ? r.exceptionDetails.exception.description : r.exceptionDetails.text}`);
  return r.result.value;
}

function stats(page) {
  return page.evaluate(() => window.conclave.statsByParticipant());
}

/** Wait until `page` decodes video and receives audio from every participant in `pids`. */
async function waitMediaFrom(page, pids, { timeoutMs = 30000, audio = true } = {}) {
  let last = null;
  try {
    return await waitFor(
      `${page.label} to receive ${audio ? 'audio and video' : 'video'} from ${pids.join(', ')}`,
      async () => {
        const s = (last = await stats(page));
        const ok = pids.every((p) => s[p] && s[p].videoFramesDecoded > 0 && (!audio || s[p].audioPacketsReceived > 0));
        return ok ? s : null;
      },
      { timeoutMs, intervalMs: 100 }
    );
  } catch (err) {
    err.message += `; last stats: ${safeJson(last)}`;
    throw err;
  }
}

/**
 * Sample stats twice: wait until, for every pid, videoFramesDecoded and (if audio)
 * audioPacketsReceived are strictly greater than in the first sample.
 */
async function assertMediaGrowing(page, pids, { timeoutMs = 15000, audio = true, video = true } = {}) {
  const first = await stats(page);
  for (const p of pids) {
    if (!first[p]) throw new Error(`${page.label}: no inbound stats at all for ${p} (have ${Object.keys(first).join(', ') || 'none'})`);
  }
  let last = null;
  let second;
  try {
    second = await waitFor(
      `${page.label}: media from ${pids.join(', ')} to keep growing`,
      async () => {
        const s = (last = await stats(page));
        const ok = pids.every(
          (p) =>
            s[p] &&
            (!video || s[p].videoFramesDecoded > first[p].videoFramesDecoded) &&
            (!audio || s[p].audioPacketsReceived > first[p].audioPacketsReceived)
        );
        return ok ? s : null;
      },
      { timeoutMs, intervalMs: 200 }
    );
  } catch (err) {
    err.message += `; first sample: ${safeJson(first)}; last sample: ${safeJson(last)}`;
    throw err;
  }
  return { first, second };
}

/**
 * Wait until `page` has received a server message with `id` whose fields equal `fields`
 * (shallow). Returns the message.
 */
function waitEvent(page, id, fields = {}, opts) {
  return waitFor(
    `${page.label} to receive ${id} ${safeJson(fields)}`,
    () =>
      page.evaluate(
        ([id, fields]) =>
          window.conclave.events.find((e) => e.id === id && Object.entries(fields).every(([k, v]) => e[k] === v)) || null,
        [id, fields]
      ),
    opts
  );
}

module.exports = {
  Harness,
  waitFor,
  sleep,
  httpGet,
  stats,
  waitMediaFrom,
  assertMediaGrowing,
  waitEvent,
  quietEval,
  tail,
  SIGNALING_BIN,
  MEDIA_BIN,
};
