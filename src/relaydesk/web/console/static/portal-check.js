// relaydesk portal: "Run a check" on the new-ticket form (docs/console.md §run a check).
//
// A doctor for the customer's browser: it asks the console for a live token, opens a
// WebSocket to this node, logs in, sends timed pings (RTT, loss, and the clock offset
// NTP-style from the server's pong timestamps), publishes one message to the user's own
// conversation and waits for its acknowledgement and its delivery.  It speaks the JSON
// subprotocol directly (docs/protocol.md §3-§6), not through relaydesk.js, so it sees
// every frame and close code, as the Python doctor does.
//
// The result is a report in the doctor's format (docs/doctor.md: url, created_at,
// sdk_version, status, checks[{name, status, reason, data, elapsed_ms}], user, device,
// connection_log), shown under the button and appended to the description as a table and
// fenced JSON when the form is submitted, so the automatic acknowledgement diagnoses with
// it (desk/diagnosis/client_evidence.py reads it like any doctor report).
//
// Hooks: button#run-check and output#check-result inside form#new-ticket-form.
const PREFIX = "/console";
const SUBPROTOCOL = "relaydesk.v1.json";
const SDK = "relaydesk-portal-check/0.1";
const PROBES = 10;
const PROBE_GAP_MS = 50;
const TIMEOUT_MS = 5000;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;
// The doctor's thresholds (relaydesk/doctor/analysis.py).
const SKEW_WARN_MS = 2000;
const SKEW_FAIL_MS = 30000;
const LOSS_FAIL = 0.2;
const RTT_WARN_MS = 500;
const MARK = "**relaydesk portal check**";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i];
}

const round = (x) => (x === null ? null : Math.round(x * 1000) / 1000);

class Check {
  constructor(url, device) {
    this.url = url;
    this.device = device;
    this.checks = [];
    this.log = [];
    this.frames = []; // waiters: {match(frame), resolve}
    this.ws = null;
    this.closed = null;
  }

  note(line) {
    const t = new Date().toISOString().slice(11, 23);
    if (this.log.length < 50) this.log.push(`${t} ${line}`);
  }

  record(name, status, reason, data, started) {
    const elapsed = Math.max(0, performance.now() - started);
    this.checks.push({ name, status, reason, data: data || {}, elapsed_ms: round(elapsed) });
    this.note(`${name} ${status} in ${elapsed.toFixed(0)} ms: ${reason.slice(0, 160)}`);
  }

  skip(names, why) {
    for (const name of names) this.record(name, "skip", why, {}, performance.now());
  }

  // The next frame for which match(frame) is true, or null after ms.
  next(match, ms) {
    return new Promise((resolve) => {
      const waiter = { match, resolve };
      this.frames.push(waiter);
      setTimeout(() => {
        const i = this.frames.indexOf(waiter);
        if (i >= 0) {
          this.frames.splice(i, 1);
          resolve(null);
        }
      }, ms);
    });
  }

  onFrame(frame, at) {
    for (const w of [...this.frames]) {
      if (w.match(frame)) {
        this.frames.splice(this.frames.indexOf(w), 1);
        w.resolve({ frame, at });
      }
    }
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  async token() {
    const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
    const r = await fetch(`${PREFIX}/live-token`, {
      method: "POST",
      headers: { "X-CSRF-Token": csrf },
      credentials: "same-origin",
    });
    if (!r.ok) throw new Error(`the console refused a token (HTTP ${r.status})`);
    return (await r.json()).token;
  }

  async upgrade() {
    const t0 = performance.now();
    const opened = await new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(this.url, [SUBPROTOCOL]);
      } catch (err) {
        resolve(String(err));
        return;
      }
      this.ws = ws;
      const timer = setTimeout(() => resolve("no answer within 5 s"), TIMEOUT_MS);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(true);
      };
      ws.onmessage = (msg) => {
        const at = performance.now();
        try {
          this.onFrame(JSON.parse(msg.data), at);
        } catch (err) {
          /* a frame this check does not read */
        }
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        this.closed = ev.code;
        this.note(`closed with ${ev.code}${ev.reason ? ` (${ev.reason})` : ""}`);
        resolve(`closed with ${ev.code} before opening`);
      };
    });
    if (opened !== true) {
      this.record("websocket", "fail", `upgrade failed: ${opened}`, {}, t0);
      return false;
    }
    const ms = performance.now() - t0;
    this.record("websocket", "pass", `upgraded in ${ms.toFixed(1)} ms, subprotocol ${this.ws.protocol}`,
      { subprotocol: this.ws.protocol, upgrade_ms: round(ms) }, t0);
    return true;
  }

  async login(token) {
    const t0 = performance.now();
    this.send({ t: "hello", token, device: this.device, cursor: MAX_SAFE, sdk: SDK });
    const got = await this.next((f) => f.t === "welcome" || (f.t === "error" && f.rid == null), TIMEOUT_MS);
    if (!got) {
      this.record("login", "fail", "no answer to hello within 5 s", {}, t0);
      return null;
    }
    const f = got.frame;
    if (f.t === "error") {
      this.record("login", "fail", `${f.code}: ${f.msg}`, { code: f.code }, t0);
      return null;
    }
    this.record("login", "pass", `logged in as ${f.user} on node ${f.node} (${f.region})`,
      { user: f.user, device: f.device, node: f.node, region: f.region, heartbeat_ms: f.heartbeat_ms }, t0);
    return f;
  }

  async probe() {
    const t0 = performance.now();
    const waits = [];
    let lastTs = 0;
    for (let i = 0; i < PROBES; i++) {
      if (i) await sleep(PROBE_GAP_MS);
      const ts = Math.max(lastTs + 1, Date.now());
      lastTs = ts;
      const sentWall = Date.now();
      const sentMono = performance.now();
      waits.push(this.next((f) => f.t === "pong" && f.ts === ts, 2000).then((got) =>
        got && { rtt: got.at - sentMono, sentWall, serverTs: got.frame.server_ts }));
      this.send({ t: "ping", ts });
    }
    const samples = (await Promise.all(waits)).filter(Boolean);
    const rtts = samples.map((s) => s.rtt);
    const loss = (PROBES - samples.length) / PROBES;
    const data = {
      sent: PROBES, answered: samples.length, loss,
      rtt_min_ms: round(rtts.length ? Math.min(...rtts) : null),
      rtt_p50_ms: round(percentile(rtts, 0.5)),
      rtt_p95_ms: round(percentile(rtts, 0.95)),
      rtt_max_ms: round(rtts.length ? Math.max(...rtts) : null),
    };
    let status = "pass";
    if (!samples.length || loss >= LOSS_FAIL) status = "fail";
    else if (loss > 0 || data.rtt_p95_ms > RTT_WARN_MS) status = "warn";
    const reason = samples.length
      ? `${samples.length}/${PROBES} answered, RTT p50 ${data.rtt_p50_ms.toFixed(1)} ms, p95 ${data.rtt_p95_ms.toFixed(1)} ms`
      : "no ping answered";
    this.record("rtt_loss", status, reason, data, t0);

    const t1 = performance.now();
    if (!samples.length) {
      this.record("clock_skew", "skip", "skipped: no pong came back to compare clocks", {}, t1);
      return;
    }
    // NTP-style: the server stamped its pong within the round trip of the fastest sample.
    const best = samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    const offset = best.serverTs - (best.sentWall + best.rtt / 2);
    const skew = { offset_ms: round(offset), uncertainty_ms: round(best.rtt / 2), rtt_ms: round(best.rtt) };
    const off = Math.abs(offset) - best.rtt / 2;
    const side = offset > 0 ? "behind" : "ahead of";
    const text = `this computer's clock is ${(Math.abs(offset) / 1000).toFixed(2)} s ${side} the server's (±${(best.rtt / 2).toFixed(0)} ms)`;
    this.record("clock_skew", off > SKEW_FAIL_MS ? "fail" : off > SKEW_WARN_MS ? "warn" : "pass", text, skew, t1);
  }

  async roundTrip(user) {
    const t0 = performance.now();
    const id = `${this.device}-${Math.random().toString(16).slice(2, 12)}`;
    const to = `user:${user}`;
    const acked = this.next((f) => (f.t === "puback" || f.t === "error") && f.id === id, TIMEOUT_MS);
    const delivered = this.next((f) => f.t === "msgs" && (f.items || []).some((e) => e.id === id), TIMEOUT_MS);
    this.send({ t: "pub", id, to, body: btoa("relaydesk portal check round trip") });
    const ack = await acked;
    if (!ack || ack.frame.t === "error") {
      const why = ack ? `refused: ${ack.frame.code}: ${ack.frame.msg}` : "no acknowledgement within 5 s";
      this.record("round_trip", "fail", why, {}, t0);
      return;
    }
    const data = { id, conv: ack.frame.conv, seq: ack.frame.seq, ack_ms: round(ack.at - t0) };
    const back = await delivered;
    if (!back) {
      this.record("round_trip", "fail", `stored as ${data.conv} #${data.seq} but not delivered back within 5 s`, data, t0);
      return;
    }
    data.delivered_ms = round(back.at - t0);
    this.record("round_trip", "pass",
      `${to}: acknowledged in ${data.ack_ms.toFixed(1)} ms, back in the feed in ${data.delivered_ms.toFixed(1)} ms`, data, t0);
  }

  async run() {
    let token = null;
    try {
      token = await this.token();
    } catch (err) {
      this.record("login", "fail", String(err.message || err), {}, performance.now());
    }
    let welcome = null;
    if (token && (await this.upgrade())) welcome = await this.login(token);
    else if (token) this.skip(["login"], "skipped: websocket did not pass");
    if (welcome) {
      await this.probe();
      await this.roundTrip(welcome.user);
    } else {
      this.skip(["clock_skew", "rtt_loss", "round_trip"], "skipped: login did not pass");
    }
    if (this.ws) this.ws.close(1000);
    const rank = { pass: 0, skip: 0, warn: 1, fail: 2 };
    const worst = Math.max(0, ...this.checks.map((c) => rank[c.status]));
    return {
      url: this.url,
      created_at: new Date().toISOString(),
      sdk_version: SDK,
      status: ["pass", "warn", "fail"][worst],
      checks: this.checks,
      user: welcome ? welcome.user : "",
      device: welcome ? welcome.device : this.device,
      connection_log: this.log,
    };
  }
}

// The report as ticket text: the doctor's layout (report_markdown), marked as ours.
function markdown(report) {
  const rows = report.checks.map((c) => `| ${c.name} | ${c.status.toUpperCase()} | ${c.reason.replace(/\|/g, "\\|")} |`);
  return [
    `${MARK}: ${report.status.toUpperCase()} for \`${report.url}\` at ${report.created_at} (${report.sdk_version}, ${navigator.userAgent.slice(0, 80)})`,
    "", "| check | status | reason |", "|---|---|---|", ...rows, "",
    "```json", JSON.stringify(report, null, 2), "```",
  ].join("\n");
}

function show(output, report) {
  output.replaceChildren();
  const summary = document.createElement("p");
  summary.textContent = `Check ${report.status.toUpperCase()}: it will be attached to the ticket.`;
  const list = document.createElement("ul");
  for (const c of report.checks) {
    const li = document.createElement("li");
    li.dataset.check = c.name;
    li.dataset.status = c.status;
    li.textContent = `${c.name}: ${c.status} — ${c.reason}`;
    list.append(li);
  }
  output.append(summary, list);
  output.dataset.status = report.status;
}

function setup() {
  const form = document.getElementById("new-ticket-form");
  const button = document.getElementById("run-check");
  const output = document.getElementById("check-result");
  if (!form || !button || !output) return;
  let report = null;
  button.disabled = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    output.dataset.status = "running";
    output.textContent = "Checking the connection from this browser…";
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const hex = Math.random().toString(16).slice(2, 8);
    report = await new Check(`${scheme}://${location.host}/v1/ws`, `browser-${hex}`).run();
    show(output, report);
    button.disabled = false;
  });
  form.addEventListener("submit", () => {
    const description = form.querySelector('textarea[name="description"]');
    if (!report || !description || description.value.includes(MARK)) return;
    description.value = `${description.value.trimEnd()}\n\n${markdown(report)}`;
  });
}

setup();
