'use strict';
// A minimal WebSocket client over a plain TCP socket, for hostile-client tests: it sends each
// message as exactly one frame of any size (a browser fragments large messages, depending on
// its send window), and reports the server's close code. Text frames only; answers pings.
const net = require('node:net');
const crypto = require('node:crypto');

class RawWebSocket {
  /** Connect to `ws://host:port/path` (plain TCP only). */
  static connect(url, { timeoutMs = 10000 } = {}) {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const sock = net.connect(Number(u.port), u.hostname);
      const key = crypto.randomBytes(16).toString('base64');
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`websocket handshake to ${url} timed out`));
      }, timeoutMs);
      let buf = Buffer.alloc(0);
      const onData = (d) => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        clearTimeout(timer);
        sock.off('data', onData);
        const head = buf.subarray(0, end).toString();
        if (!/^HTTP\/1\.1 101/.test(head)) {
          sock.destroy();
          reject(new Error(`websocket upgrade refused: ${head.split('\r\n')[0]}`));
          return;
        }
        resolve(new RawWebSocket(sock, buf.subarray(end + 4)));
      };
      sock.on('data', onData);
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.write(
        `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://${u.host}\r\n\r\n`
      );
    });
  }

  constructor(sock, rest) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    /** Parsed JSON text messages, in order. */
    this.inbox = [];
    /** `{ code, reason }` once the server closed (or `{ code: null }` if the TCP connection died). */
    this.closed = null;
    sock.on('data', (d) => this.onData(d));
    sock.on('close', () => {
      if (!this.closed) this.closed = { code: null, reason: 'connection closed' };
    });
    sock.on('error', () => {});
    if (rest.length) this.onData(rest);
  }

  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const op = this.buf[0] & 0x0f;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) return;
      const payload = this.buf.subarray(off, off + len);
      this.buf = this.buf.subarray(off + len);
      if (op === 1) this.inbox.push(JSON.parse(payload.toString()));
      else if (op === 8) this.closed = { code: payload.length >= 2 ? payload.readUInt16BE(0) : null, reason: payload.subarray(2).toString() };
      else if (op === 9) this.frame(10, payload);
    }
  }

  /** Send one masked frame with opcode `op` (FIN set). */
  frame(op, payload) {
    const mask = crypto.randomBytes(4);
    const len = payload.length;
    const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    head[0] = 0x80 | op;
    if (len < 126) head[1] = 0x80 | len;
    else if (len < 65536) {
      head[1] = 0x80 | 126;
      head.writeUInt16BE(len, 2);
    } else {
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
    const body = Buffer.alloc(len);
    for (let i = 0; i < len; i++) body[i] = payload[i] ^ mask[i & 3];
    if (!this.sock.destroyed) this.sock.write(Buffer.concat([head, mask, body]));
  }

  /** Send `msg` as JSON in one text frame. */
  send(msg) {
    this.frame(1, Buffer.from(JSON.stringify(msg)));
  }

  /** Remove and return the first message matching `pred`, waiting at most `timeoutMs`. */
  async until(pred, timeoutMs = 15000) {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0];
      if (this.closed) throw new Error(`socket closed (${JSON.stringify(this.closed)}) while waiting`);
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`nothing matched within ${timeoutMs} ms; inbox ${JSON.stringify(this.inbox).slice(0, 500)}`);
  }

  /** Wait until the server closes (at most `timeoutMs`); returns `{ code, reason }` or null. */
  async waitClosed(timeoutMs = 10000) {
    const end = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    return this.closed;
  }

  close() {
    this.sock.destroy();
  }
}

module.exports = { RawWebSocket };
