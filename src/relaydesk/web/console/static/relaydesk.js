// relaydesk browser client for the JSON subprotocol (docs/protocol.md, version 1).
//
// A deliberately small client: login (§3.1), catch-up then live (§3.2), reconnect with
// full-jitter back-off (§3.3), cumulative coalesced acks (§5.3), de-duplication by
// position (§5.4), publish with a client message id kept until its puback (§5.1, §5.2),
// history pages (§5.7), channel joins (§5.8) and heartbeats (§6).
//
//   const rd = new RelaydeskClient({url, device, token: async () => "...", cursor: "live"});
//   rd.onEvent = (event) => {...};   // feed events (msgs items), in order, once each
//   rd.onPresence = (p) => {...};    // presence pushes (§5.9): {user, online, devices, ts}
//   rd.onState = (state) => {...};   // CONNECTING, CONNECTED, SYNCED, RECONNECTING, FAILED, CLOSED
//   await rd.connect();
//   await rd.join("room");  await rd.publish("channel:room", "hi");
"use strict";

(function (global) {
  const SUBPROTOCOL = "relaydesk.v1.json";
  // Close codes after which reconnecting cannot help (§3.3): bad token, wrong app,
  // and device replaced by a newer connection (§3.5: reconnecting would take it back).
  const FATAL = new Set([4005, 4010, 4012]);
  const MAX_SAFE = Number.MAX_SAFE_INTEGER;

  function utf8ToB64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  function b64ToUtf8(b64) {
    const bin = atob(b64 || "");
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder().decode(bytes);
  }

  function randomHex(n) {
    const a = new Uint8Array(n);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The HTTP-streaming fallback (§9) behind the few WebSocket members this client uses:
  // the hello opens POST /v1/stream, whose response is a server-sent-event stream of
  // frames; later frames go as newline-separated POST batches, one in flight at a time,
  // with the token of the hello (or of the last refresh) as bearer credentials.
  function streamUrl(wsUrl) {
    return wsUrl.replace(/^ws/, "http").replace(/\/v1\/ws$/, "") + "/v1/stream";
  }

  class StreamSocket {
    constructor(url) {
      this.url = url;
      this.readyState = WebSocket.OPEN;
      this.sid = null;
      this.token = "";
      this.queue = [];
      this.posting = false;
      this.closed = false;
      this.abort = new AbortController();
      this.onopen = () => {};
      this.onmessage = () => {};
      this.onclose = () => {};
      setTimeout(() => this.onopen(), 0);
    }

    send(text) {
      if (this.closed) return;
      const frame = JSON.parse(text);
      if (frame.token) this.token = frame.token;
      if (frame.t === "hello" && this.sid === null && !this.opening) {
        this.opening = true;
        this.openStream(text);
        return;
      }
      this.queue.push(text);
      this.flush();
    }

    async openStream(hello) {
      let response;
      try {
        response = await fetch(this.url, { method: "POST", body: hello, signal: this.abort.signal });
      } catch (err) {
        return this.end(1006);
      }
      if (!response.ok) {
        let code = 1006;
        try {
          code = (await response.json()).error.code;
        } catch (err) {
          /* not our error shape: a lost link */
        }
        return this.end(code === 4021 ? 1006 : code);
      }
      this.sid = response.headers.get("x-relaydesk-stream");
      this.flush();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let event = "";
      let data = "";
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + 1);
            if (line.startsWith(":")) continue;
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data = line.slice(5).trimStart();
            else if (line === "") {
              if (event === "close") return this.end(JSON.parse(data).code);
              if (event === "" && data) this.onmessage({ data });
              event = "";
              data = "";
            }
          }
        }
      } catch (err) {
        /* aborted or lost */
      }
      return this.end(1006);
    }

    async flush() {
      if (this.posting || this.sid === null || this.closed || !this.queue.length) return;
      this.posting = true;
      const batch = this.queue.splice(0, 256);
      try {
        const r = await fetch(`${this.url}/${this.sid}`, {
          method: "POST",
          body: batch.join("\n"),
          headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/x-ndjson" },
          signal: this.abort.signal,
        });
        if (r.status !== 204) return this.end(1006);
      } catch (err) {
        return this.end(1006);
      } finally {
        this.posting = false;
      }
      return this.flush();
    }

    close(code) {
      if (code === 1000 && this.sid !== null && !this.closed) {
        fetch(`${this.url}/${this.sid}`, {
          method: "DELETE",
          headers: { Authorization: `Bearer ${this.token}` },
          keepalive: true,
        }).catch(() => {});
      }
      this.end(code || 1000);
    }

    end(code) {
      if (this.closed) return;
      this.closed = true;
      this.readyState = WebSocket.CLOSED;
      this.abort.abort();
      this.onclose({ code });
    }
  }

  // An upgrade with no answer within this long counts as stalled (§9): use the stream.
  const UPGRADE_STALL_MS = 5000;

  class RelaydeskClient {
    // options.url: ws(s)://host/v1/ws; options.token: async () => JWT (fresh per login);
    // options.device: device id (a Name, §2.1); options.cursor: "live" to start at the
    // newest position (the server clamps an over-large cursor, §3.1) or a number.
    constructor(options) {
      this.url = options.url;
      this.tokenSource = options.token;
      this.device = options.device;
      this.startCursor = options.cursor === undefined ? "live" : options.cursor;
      // "auto": a WebSocket, or the stream after a refused or stalled upgrade (§9);
      // "websocket" or "stream" to force one.
      this.transport = options.transport || "auto";
      this.useStream = this.transport === "stream";
      this.onEvent = () => {};
      this.onState = () => {};
      this.onError = () => {};
      this.onPresence = () => {};
      this.state = "CLOSED";
      this.ws = null;
      this.lastPos = null; // highest feed position received (§5.4)
      this.ackedPos = 0;
      this.rid = 0;
      this.pending = new Map(); // rid -> {resolve, reject}
      this.outbox = new Map(); // client id -> {frame, resolve, reject}, insertion order (§5.2)
      this.channels = new Set(); // re-joined after a reconnect
      this.attempt = 0;
      this.closedByUser = false;
      this.timers = {};
    }

    setState(state) {
      if (this.state !== state) {
        this.state = state;
        this.onState(state);
      }
    }

    connect() {
      this.closedByUser = false;
      this.setState("CONNECTING");
      return this.open();
    }

    close() {
      this.closedByUser = true;
      this.flushAck();
      this.clearTimers();
      if (this.ws) this.ws.close(1000);
      this.setState("CLOSED");
    }

    clearTimers() {
      for (const key of Object.keys(this.timers)) {
        clearTimeout(this.timers[key]);
        clearInterval(this.timers[key]);
      }
      this.timers = {};
    }

    async open() {
      let token;
      try {
        token = await this.tokenSource();
      } catch (err) {
        this.onError(err);
        return this.retry();
      }
      if (!token) {
        this.setState("FAILED");
        return undefined;
      }
      return new Promise((resolve) => {
        const stream = this.useStream;
        const ws = stream ? new StreamSocket(streamUrl(this.url)) : new WebSocket(this.url, [SUBPROTOCOL]);
        this.ws = ws;
        let welcomed = false;
        if (!stream && this.transport === "auto") {
          this.timers.stall = setTimeout(() => {
            if (ws.readyState === WebSocket.CONNECTING) ws.close();
          }, UPGRADE_STALL_MS);
        }
        ws.onopen = () => {
          const cursor = this.lastPos !== null ? this.lastPos : this.startCursor === "live" ? MAX_SAFE : this.startCursor;
          this.send({ t: "hello", token, device: this.device, cursor, sdk: "relaydesk-js/0.1" });
        };
        ws.onmessage = (msg) => {
          let frame;
          try {
            frame = JSON.parse(msg.data);
          } catch (err) {
            return;
          }
          if (frame.t === "welcome" && !welcomed) {
            welcomed = true;
            this.onWelcome(frame);
            resolve(frame);
          }
          this.dispatch(frame);
        };
        ws.onclose = (ev) => {
          this.clearTimers();
          for (const p of this.pending.values()) p.reject(new Error("connection closed"));
          this.pending.clear();
          if (!welcomed) resolve(undefined);
          if (this.closedByUser) return;
          if (FATAL.has(ev.code)) {
            this.setState("FAILED");
            return;
          }
          if (!welcomed && !stream && this.transport === "auto") {
            // Refused, stalled, or closed before the login could finish: a proxy in
            // the way of WebSockets.  Use the stream from now on (§9).
            this.useStream = true;
            this.timers.retry = setTimeout(() => this.open(), 0);
            return;
          }
          this.retry();
        };
      });
    }

    retry() {
      this.setState("RECONNECTING");
      // Full jitter (§3.3): uniform(0, min(10 s, 0.25 s * 2^n)).
      const delay = Math.random() * Math.min(10000, 250 * 2 ** this.attempt);
      this.attempt += 1;
      this.timers.retry = setTimeout(() => this.open(), delay);
      return undefined;
    }

    onWelcome(w) {
      this.welcome = w;
      if (this.lastPos === null) this.lastPos = w.cursor;
      this.ackedPos = Math.min(this.ackedPos, w.cursor);
      this.setState("CONNECTED");
      this.timers.ping = setInterval(() => this.send({ t: "ping", ts: Date.now() }), w.heartbeat_ms);
      this.lastHeard = Date.now();
      this.timers.dead = setInterval(() => {
        if (Date.now() - this.lastHeard > w.timeout_ms && this.ws) this.ws.close(4050);
      }, 1000);
      for (const channel of this.channels) this.request({ t: "join", channel }).catch(() => {});
      for (const entry of this.outbox.values()) this.send(entry.frame); // resend in order (§5.2)
    }

    send(frame) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(frame));
        return true;
      }
      return false;
    }

    request(frame) {
      this.rid += 1;
      const rid = this.rid;
      return new Promise((resolve, reject) => {
        this.pending.set(rid, { resolve, reject });
        if (!this.send({ ...frame, rid })) {
          this.pending.delete(rid);
          reject(new Error("not connected"));
        }
      });
    }

    dispatch(f) {
      this.lastHeard = Date.now();
      switch (f.t) {
        case "msgs":
          for (const item of f.items) {
            if (this.lastPos !== null && item.pos <= this.lastPos) continue; // seen (§5.4)
            this.lastPos = item.pos;
            if (item.kind === "msg") item.text = b64ToUtf8(item.body);
            if (item.kind === "msg" && item.from === this.welcome.user && item.dev === this.device) {
              this.settle(item.id, item); // our own echo confirms the outbox entry
            }
            try {
              this.onEvent(item);
            } catch (err) {
              this.onError(err);
            }
          }
          this.scheduleAck();
          break;
        case "synced":
          this.attempt = 0;
          this.setState("SYNCED");
          break;
        case "puback":
          this.settle(f.id, f);
          break;
        case "presence":
          try {
            this.onPresence(f);
          } catch (err) {
            this.onError(err);
          }
          break;
        case "history":
        case "joined":
        case "ok":
        case "presence_state":
        case "auth_ok":
          this.reply(f.rid, f, null);
          break;
        case "error":
          if (f.rid !== undefined && f.rid !== null) this.reply(f.rid, null, f);
          else if (f.id) this.fail(f.id, f);
          else this.onError(f);
          break;
        default:
          break;
      }
    }

    reply(rid, value, error) {
      const p = this.pending.get(rid);
      if (!p) return;
      this.pending.delete(rid);
      if (error) p.reject(Object.assign(new Error(error.msg), { code: error.code }));
      else p.resolve(value);
    }

    settle(id, value) {
      const entry = this.outbox.get(id);
      if (entry) {
        this.outbox.delete(id);
        entry.resolve(value);
      }
    }

    fail(id, error) {
      const entry = this.outbox.get(id);
      if (!entry) return;
      if (error.code === 4040) {
        // RATE_LIMITED: back off and resend the same id (§5.2).
        setTimeout(() => this.send(entry.frame), 500);
        return;
      }
      this.outbox.delete(id);
      entry.reject(Object.assign(new Error(error.msg), { code: error.code }));
    }

    // Coalesced cumulative acks: at most one per 100 ms (§5.3).
    scheduleAck() {
      if (this.timers.ack) return;
      this.timers.ack = setTimeout(() => {
        delete this.timers.ack;
        this.flushAck();
      }, 100);
    }

    flushAck() {
      if (this.lastPos !== null && this.lastPos > this.ackedPos && this.send({ t: "ack", pos: this.lastPos })) {
        this.ackedPos = this.lastPos;
      }
    }

    join(channel) {
      this.channels.add(channel);
      return this.request({ t: "join", channel });
    }

    history(conv, limit = 50, before) {
      const frame = { t: "history_q", conv, limit };
      if (before !== undefined) frame.before = before;
      return this.request(frame);
    }

    // Presence of users this token may ask about (docs/protocol.md §5.9).
    presence(users) {
      return this.request({ t: "presence_q", users });
    }

    publish(to, text) {
      const id = `${this.device}-${randomHex(8)}`;
      const frame = { t: "pub", id, to, body: utf8ToB64(text) };
      return new Promise((resolve, reject) => {
        this.outbox.set(id, { frame, resolve, reject });
        this.send(frame); // if offline, sent after the next welcome
      });
    }
  }

  global.RelaydeskClient = RelaydeskClient;
  global.relaydeskText = { utf8ToB64, b64ToUtf8, randomHex };
})(window);
