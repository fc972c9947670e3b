// relaydesk console: live updates, countdowns, drafts, war-room chat, KB suggestions.
// No inline scripts anywhere (CSP script-src 'self'); data arrives in data-* attributes.
"use strict";

(function () {
  const PREFIX = "/console";
  const body = document.body;
  const page = body.dataset.page;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : null;

  // -- drafts: kept in localStorage so an expired session never loses typing ------------
  function draftKey(form, field) {
    return `rd-draft:${form.dataset.draft}:${field.name}`;
  }

  function setupDrafts() {
    const params = new URLSearchParams(location.search);
    const done = params.get("done");
    for (const form of document.querySelectorAll("form[data-draft]")) {
      const fields = form.querySelectorAll("textarea, input[type=text], input[type=datetime-local], select");
      const submittedOk = done && (form.id === "reply-form" ? done === "reply" || done === "note" : done === "new");
      for (const field of fields) {
        if (!field.name) continue;
        const key = draftKey(form, field);
        if (submittedOk) localStorage.removeItem(key);
        const saved = localStorage.getItem(key);
        if (saved !== null && !field.value) field.value = saved;
        field.addEventListener("input", () => localStorage.setItem(key, field.value));
        field.addEventListener("change", () => localStorage.setItem(key, field.value));
      }
    }
    if (done === "new") {
      for (const key of Object.keys(localStorage)) if (key.startsWith("rd-draft:new-ticket:")) localStorage.removeItem(key);
    }
    if (done) {
      params.delete("done");
      const q = params.toString();
      history.replaceState(null, "", location.pathname + (q ? `?${q}` : "") + location.hash);
    }
  }

  // -- countdowns on the queue ----------------------------------------------------------
  function fmt(ms) {
    const neg = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const text = d ? `${d}d ${h}h` : h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
    return neg ? `overdue ${text}` : text;
  }

  function tickCountdowns() {
    const now = Date.now();
    for (const cell of document.querySelectorAll("[data-due]")) {
      const left = Number(cell.dataset.due) - now;
      cell.textContent = fmt(left);
      cell.classList.toggle("overdue", left < 0);
    }
  }

  // -- live connection ------------------------------------------------------------------
  // One device id per tab (sessionStorage): a device has one live connection and the
  // newest login replaces the older one (protocol §3.5), so tabs must not share it.
  function deviceId() {
    let id = sessionStorage.getItem("rd-device");
    if (!id) {
      id = `web-${window.relaydeskText.randomHex(6)}`;
      sessionStorage.setItem("rd-device", id);
    }
    return id;
  }

  function setLive(state) {
    const dot = document.getElementById("live-status");
    if (dot) {
      dot.dataset.state = state;
      dot.title = `live updates: ${state.toLowerCase()}`;
    }
  }

  async function fetchToken(ticket) {
    const url = `${PREFIX}/live-token${ticket ? `?ticket=${encodeURIComponent(ticket)}` : ""}`;
    const r = await fetch(url, { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    if (r.status === 401) {
      // Session over: go to sign-in; drafts stay in localStorage.
      location.assign(`${PREFIX}/sign-in?next=${encodeURIComponent(location.pathname)}&expired=1`);
      return null;
    }
    if (!r.ok) throw new Error(`live token: ${r.status}`);
    return (await r.json()).token;
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  async function refreshInto(url, target) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "X-Console-Fragment": "1" } });
    if (r.redirected && r.url.includes("/sign-in")) {
      location.assign(r.url);
      return;
    }
    if (!r.ok) return;
    target.innerHTML = await r.text();
    target.dispatchEvent(new CustomEvent("rd:refreshed", { bubbles: true }));
  }

  function connectLive(ticket, channels, onEvent) {
    if (!csrf || !window.RelaydeskClient) return null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const client = new window.RelaydeskClient({
      url: `${scheme}://${location.host}/v1/ws`,
      device: deviceId(),
      token: () => fetchToken(ticket),
      cursor: "live",
    });
    client.onState = (state) => {
      setLive(state);
      body.dataset.live = state;
    };
    client.onEvent = onEvent;
    client.connect().then(async (welcome) => {
      if (!welcome) return;
      for (const channel of channels) await client.join(channel);
      body.dataset.liveReady = "1";
      body.dispatchEvent(new CustomEvent("rd:live-ready"));
    });
    return client;
  }

  function isNotice(event, channel) {
    return event.kind === "msg" && event.conv === `ch:${channel}` && event.from === "desk-bot";
  }

  // -- war room -------------------------------------------------------------------------
  function setupWarRoom(client, box) {
    const channel = box.dataset.channel;
    const conv = `ch:${channel}`;
    const people = JSON.parse(box.dataset.people || "{}");
    const log = document.getElementById("war-room-log");
    const form = document.getElementById("war-room-form");
    const input = document.getElementById("war-room-input");
    const status = document.getElementById("war-room-status");
    const seen = new Set();

    function show(ev) {
      if (ev.kind !== "msg" || ev.conv !== conv || seen.has(ev.seq)) return;
      seen.add(ev.seq);
      const li = document.createElement("li");
      li.className = ev.from === client.welcome.user ? "mine" : "theirs";
      li.dataset.seq = ev.seq;
      const who = document.createElement("strong");
      who.textContent = people[ev.from] || ev.from;
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = ` ${new Date(ev.ts).toISOString().slice(11, 16)} UTC`;
      const text = document.createElement("div");
      text.textContent = ev.text !== undefined ? ev.text : window.relaydeskText.b64ToUtf8(ev.body);
      li.append(who, when, text);
      const after = Array.from(log.children).find((el) => Number(el.dataset.seq) > ev.seq);
      log.insertBefore(li, after || null);
      log.scrollTop = log.scrollHeight;
    }

    body.addEventListener("rd:live-ready", async () => {
      try {
        await client.join(channel);
        const page = await client.history(conv, 100);
        for (const ev of page.items) show(ev);
        status.textContent = "live";
        box.dataset.ready = "1";
      } catch (err) {
        status.textContent = `war room unavailable: ${err.message}`;
      }
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      try {
        await client.publish(`channel:${channel}`, text);
      } catch (err) {
        status.textContent = `not sent: ${err.message}`;
        input.value = text;
      }
    });
    return show;
  }

  // -- pages ----------------------------------------------------------------------------
  function queuePage() {
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    const rows = document.getElementById("queue-rows");
    const query = body.dataset.liveQuery || "";
    const refresh = debounce(() => refreshInto(`${PREFIX}/queue?${query}${query ? "&" : ""}fragment=rows`, rows).then(tickCountdowns), 80);
    connectLive(null, ["desk-queue"], (ev) => {
      if (isNotice(ev, "desk-queue")) refresh();
    });
  }

  function ticketPage() {
    const ticket = body.dataset.ticket;
    const live = document.getElementById("live");
    const refresh = debounce(() => refreshInto(`${PREFIX}/tickets/${ticket}?fragment=live`, live), 80);
    const channels = [`desk-t-${ticket}`];
    const box = document.getElementById("war-room");
    let showChat = null;
    const client = connectLive(ticket, channels, (ev) => {
      if (isNotice(ev, `desk-t-${ticket}`)) refresh();
      else if (showChat) showChat(ev);
    });
    if (client && box) showChat = setupWarRoom(client, box);
    // A form post whose session has expired comes back via sign-in; remember the page.
    for (const form of document.querySelectorAll("form[method=post]")) {
      form.addEventListener("submit", () => sessionStorage.setItem("rd-last-page", location.pathname));
    }
  }

  function newTicketPage() {
    const subject = document.getElementById("subject");
    const box = document.getElementById("kb-suggestions");
    const list = document.getElementById("kb-list");
    if (!subject || !box) return;
    let seq = 0;
    const suggest = debounce(async () => {
      const q = subject.value.trim();
      const mine = ++seq;
      if (q.length < 3) {
        box.hidden = true;
        return;
      }
      let data;
      try {
        const r = await fetch(`/api/kb/suggest?q=${encodeURIComponent(q)}&limit=5`, { credentials: "omit" });
        if (!r.ok) return; // no knowledge base mounted: no suggestions
        data = await r.json();
      } catch (err) {
        return;
      }
      if (mine !== seq) return;
      list.replaceChildren();
      for (const hit of data.hits || []) {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.textContent = hit.title || hit.slug;
        a.href = hit.url || `/api/kb/articles/${encodeURIComponent(hit.slug)}`;
        a.target = "_blank";
        a.rel = "noopener";
        li.append(a);
        if (hit.summary) {
          const p = document.createElement("p");
          p.className = "muted";
          p.textContent = hit.summary;
          li.append(p);
        }
        list.append(li);
      }
      box.hidden = list.children.length === 0;
      box.dataset.count = String(list.children.length);
    }, 150);
    subject.addEventListener("input", suggest);
  }

  // Network quality: typing a from/to date means a custom range.
  function qualityPage() {
    const range = document.getElementById("quality-range");
    const form = document.getElementById("quality-form");
    if (!range || !form) return;
    for (const input of form.querySelectorAll("input[type=datetime-local]")) {
      input.addEventListener("input", () => {
        range.value = "custom";
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupDrafts();
    if (page === "queue") queuePage();
    else if (page === "ticket") ticketPage();
    else if (page === "new-ticket") newTicketPage();
    else if (page === "quality") qualityPage();
  });
})();
