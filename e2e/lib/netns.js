'use strict';
// Network namespaces for browser tests that need several "hosts" on one machine: a namespace
// per host, veth pairs between them, nft rules inside one to block a path, and a wrapper that
// runs Chromium inside a namespace (playwright's `executablePath`).
//
// Names carry the test process's PID, so parallel runs do not collide. Everything made here
// is removed by `Network.close()` and, as a last resort, on process exit. Addresses live only
// inside the namespaces: the host's own network is never touched.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const IP = fs.existsSync('/usr/sbin/ip') ? '/usr/sbin/ip' : 'ip';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

const made = new Set(); // namespace names still to delete
process.on('exit', () => {
  for (const ns of made) {
    try {
      execFileSync(IP, ['netns', 'del', ns], { stdio: 'ignore' });
    } catch (_) {}
  }
});

function run(cmd, args, input) {
  try {
    return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'], timeout: 10000 }).toString();
  } catch (err) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr ? err.stderr.toString().trim() : err.message}`);
  }
}

/** Whether this machine can make namespaces (root, iproute2) and nft rules in them. */
function available() {
  try {
    execFileSync(IP, ['netns', 'list'], { stdio: 'ignore' });
    execFileSync('nft', ['--version'], { stdio: 'ignore' });
    return process.getuid && process.getuid() === 0;
  } catch (_) {
    return false;
  }
}

class Network {
  /** `tag`: a short name (letters), part of every namespace name. */
  constructor(tag) {
    this.prefix = `cv${tag}${process.pid}`;
    this.namespaces = [];
    this.links = 0;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `conclave-${tag}-`));
  }

  /** A new namespace (loopback up); returns its name. */
  host(name) {
    const ns = `${this.prefix}-${name}`;
    run(IP, ['netns', 'add', ns]);
    made.add(ns);
    this.namespaces.push(ns);
    run(IP, ['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * A veth pair between namespaces `a` and `b`, addresses `aAddr` and `bAddr` (CIDR, e.g.
   * 10.201.1.1/24). `bGateway`: make `a`'s address `b`'s default route.
   */
  link(a, aAddr, b, bAddr, { bGateway = false } = {}) {
    const n = this.links++;
    const [ea, eb] = [`va${n}`, `vb${n}`];
    run(IP, ['link', 'add', ea, 'netns', a, 'type', 'veth', 'peer', 'name', eb, 'netns', b]);
    run(IP, ['-n', a, 'addr', 'add', aAddr, 'dev', ea]);
    run(IP, ['-n', b, 'addr', 'add', bAddr, 'dev', eb]);
    run(IP, ['-n', a, 'link', 'set', ea, 'up']);
    run(IP, ['-n', b, 'link', 'set', eb, 'up']);
    if (bGateway) run(IP, ['-n', b, 'route', 'add', 'default', 'via', aAddr.split('/')[0]]);
    return [ea, eb];
  }

  /** One more address (CIDR) on interface `dev` of namespace `ns`. */
  addr(ns, dev, cidr) {
    run(IP, ['-n', ns, 'addr', 'add', cidr, 'dev', dev]);
  }

  /** Load an nft ruleset (text) into namespace `ns`. */
  nft(ns, ruleset) {
    run(IP, ['netns', 'exec', ns, 'nft', '-f', '-'], ruleset);
    return run(IP, ['netns', 'exec', ns, 'nft', 'list', 'ruleset']);
  }

  /** argv prefix that runs a command inside `ns`. */
  exec(ns) {
    return [IP, 'netns', 'exec', ns];
  }

  /** An executable that runs Chromium inside `ns` (for playwright's `executablePath`). */
  chromiumIn(ns) {
    const file = path.join(this.dir, `chromium-${ns}`);
    fs.writeFileSync(file, `#!/bin/sh\nexec ${IP} netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
    return file;
  }

  /** Delete every namespace (their veths go with them). Stop the processes inside first. */
  close() {
    for (const ns of this.namespaces.splice(0)) {
      try {
        run(IP, ['netns', 'del', ns]);
      } catch (_) {}
      made.delete(ns);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = { Network, available, IP };
