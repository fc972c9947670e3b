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
    // A row turns "at risk" when its warning instant passes, and "breached" at its
    // target, without waiting for the next live notice.
    for (const row of document.querySelectorAll("tr[data-warn]")) {
      const due = Number(row.querySelector("[data-due]")?.dataset.due || Infinity);
      const state = now >= due ? "breached" : now >= Number(row.dataset.warn) ? "at_risk" : null;
      const badge = row.querySelector(".badge");
      if (!state || !badge || badge.dataset.slaState === state) continue;
      row.className = row.className.replace(/\bsla-\S+/g, "").trim() + ` sla-${state}`;
      badge.className = `badge sla-${state}`;
      badge.dataset.slaState = state;
      badge.textContent = state === "at_risk" ? "at risk" : "breached";
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

  async function fetchToken(ticket, extra) {
    const q = ticket ? `?ticket=${encodeURIComponent(ticket)}` : extra ? `?${extra}` : "";
    const url = `${PREFIX}/live-token${q}`;
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

  // Fragments are fetched without following redirects: a signed-out fetch must not load
  // the sign-in page in the background (that would replace its form token's cookie under
  // the sign-in page the browser may be about to show), and a background refresh never
  // takes the user off the page: the next thing they send goes through sign-in and back,
  // with the draft kept.
  async function fetchPage(url) {
    const r = await fetch(url, {
      credentials: "same-origin",
      headers: { "X-Console-Fragment": "1" },
      redirect: "manual",
    });
    if (r.type === "opaqueredirect") {
      setLive("SIGNED-OUT");
      return null;
    }
    return r.ok ? r.text() : null;
  }

  // Replace the target's content only when it changed, so that an element someone is
  // using is not swapped for an identical copy.
  async function refreshInto(url, target) {
    const html = await fetchPage(url);
    if (html === null) return;
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    if (fresh.innerHTML === target.innerHTML) return;
    target.innerHTML = html;
    target.dispatchEvent(new CustomEvent("rd:refreshed", { bubbles: true }));
  }

  function connectLive(ticket, channels, onEvent, extra) {
    if (!csrf || !window.RelaydeskClient) return null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const client = new window.RelaydeskClient({
      url: `${scheme}://${location.host}/v1/ws`,
      device: deviceId(),
      token: () => fetchToken(ticket, extra),
      cursor: "live",
    });
    // Join on every welcome, not only after the first attempt: when the first attempt
    // failed (a slow token, a busy node), connect() resolves without a welcome and the
    // client's own reconnects would otherwise never join the page's channels. Each
    // (re)join fires rd:live-ready, and the page fetches what it may have missed.
    async function joinAll() {
      try {
        for (const channel of channels) await client.join(channel);
      } catch (err) {
        return; // the connection dropped meanwhile; the next welcome joins again
      }
      body.dataset.liveReady = "1";
      body.dispatchEvent(new CustomEvent("rd:live-ready"));
    }
    client.onState = (state) => {
      setLive(state);
      body.dataset.live = state;
      if (state === "CONNECTED") joinAll();
    };
    client.onEvent = onEvent;
    client.connect();
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
  // Swap parts of the page with the same parts of a freshly fetched copy of it.
  async function refreshParts(url, ids) {
    const html = await fetchPage(url);
    if (html === null) return;
    const doc = new DOMParser().parseFromString(html, "text/html");
    for (const id of ids) {
      const fresh = doc.getElementById(id);
      const here = document.getElementById(id);
      if (fresh && here && fresh.innerHTML !== here.innerHTML) here.innerHTML = fresh.innerHTML;
    }
  }

  function queuePage() {
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    const rows = document.getElementById("queue-rows");
    const bulkCount = document.getElementById("bulk-count");
    const selectAll = document.getElementById("select-all");
    let cursor = -1;

    function picks() {
      return Array.from(rows.querySelectorAll("input.pick"));
    }
    function countPicked() {
      const n = picks().filter((p) => p.checked).length;
      if (bulkCount) bulkCount.textContent = `${n} selected`;
      body.dataset.picked = String(n);
    }
    function rowList() {
      return Array.from(rows.querySelectorAll("tr[data-ticket]"));
    }
    function moveCursor(delta) {
      const list = rowList();
      if (!list.length) return;
      cursor = Math.max(0, Math.min(list.length - 1, cursor + delta));
      list.forEach((tr, i) => tr.classList.toggle("cursor", i === cursor));
      list[cursor].scrollIntoView({ block: "nearest" });
    }
    rows.addEventListener("change", countPicked);
    if (selectAll) {
      selectAll.addEventListener("change", () => {
        for (const p of picks()) p.checked = selectAll.checked;
        countPicked();
      });
    }
    // A live refresh keeps the ticked rows ticked and the keyboard cursor in place.
    const refresh = debounce(async () => {
      const ticked = new Set(picks().filter((p) => p.checked).map((p) => p.value));
      const current = rowList()[cursor]?.dataset.ticket;
      await refreshParts(location.pathname + location.search, ["queue-rows", "views", "pager"]);
      for (const p of picks()) p.checked = ticked.has(p.value);
      countPicked();
      tickCountdowns();
      const list = rowList();
      cursor = current ? list.findIndex((tr) => tr.dataset.ticket === current) : -1;
      list.forEach((tr, i) => tr.classList.toggle("cursor", i === cursor));
      body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
    }, 80);
    connectLive(null, ["desk-queue"], (ev) => {
      if (isNotice(ev, "desk-queue")) refresh();
    });
    // After a reconnect, notices sent meanwhile are gone: fetch the rows once.
    let joinedBefore = false;
    body.addEventListener("rd:live-ready", () => {
      if (joinedBefore) refresh();
      joinedBefore = true;
    });
    // Keyboard: "/" search, j/k move, o or Enter open, x tick the row.
    document.addEventListener("keydown", (e) => {
      const tag = (e.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select" || e.ctrlKey || e.metaKey || e.altKey) return;
      const list = rowList();
      if (e.key === "/") {
        e.preventDefault();
        document.getElementById("search")?.focus();
      } else if (e.key === "j") moveCursor(1);
      else if (e.key === "k") moveCursor(-1);
      else if ((e.key === "o" || e.key === "Enter") && list[cursor]) {
        list[cursor].querySelector("a.open")?.click();
      } else if (e.key === "x" && list[cursor]) {
        const box = list[cursor].querySelector("input.pick");
        box.checked = !box.checked;
        countPicked();
      }
    });
  }

  function portalPage() {
    const channel = body.dataset.orgChannel;
    const list = document.getElementById("portal-rows");
    if (!channel || !list) return;
    const refresh = debounce(
      () => refreshInto(`${PREFIX}/portal?fragment=rows`, list).then(() => {
        body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
      }),
      80,
    );
    connectLive(null, [channel], (ev) => {
      if (isNotice(ev, channel)) refresh();
    }, "portal=1");
    body.addEventListener("rd:live-ready", () => refresh());
  }

  // -- collision detection: who else is on this ticket, and who is typing ----------------
  // Agents announce "viewing" (on arrival, then every 20 s), "typing" (at most every 4 s
  // while they type a reply) and "left" in the agents-only channel desk-ta-<N>; relaydesk's
  // presence push clears an agent whose last device went offline.
  function setupCollision(client, channel) {
    const conv = `ch:${channel}`;
    const box = document.getElementById("collision");
    const me = body.dataset.me;
    const names = JSON.parse(body.dataset.agents || "{}");
    const seen = new Map();
    const VIEW_MS = 45000;
    const TYPE_MS = 8000;

    function render() {
      const now = Date.now();
      const typing = [];
      const viewing = [];
      for (const [user, s] of seen) {
        if (now - s.viewAt > VIEW_MS) seen.delete(user);
        else if (now - s.typeAt < TYPE_MS) typing.push(names[user] || user);
        else viewing.push(names[user] || user);
      }
      const parts = [];
      if (typing.length) parts.push(`${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing a reply`);
      if (viewing.length) parts.push(`${viewing.join(", ")} ${viewing.length > 1 ? "are" : "is"} viewing this ticket`);
      box.hidden = parts.length === 0;
      box.textContent = parts.join(" · ");
      box.classList.toggle("typing", typing.length > 0);
      box.dataset.typing = typing.join(",");
      box.dataset.viewing = viewing.join(",");
    }
    function see(ev, at) {
      if (ev.kind !== "msg" || ev.conv !== conv || ev.from === me) return;
      let data;
      try {
        data = JSON.parse(ev.text !== undefined ? ev.text : window.relaydeskText.b64ToUtf8(ev.body));
      } catch (err) {
        return;
      }
      if (data.t === "left") seen.delete(ev.from);
      else {
        const s = seen.get(ev.from) || { viewAt: 0, typeAt: 0 };
        s.viewAt = Math.max(s.viewAt, at);
        if (data.t === "typing") s.typeAt = Math.max(s.typeAt, at);
        seen.set(ev.from, s);
      }
      render();
    }
    function announce(t) {
      client.publish(`channel:${channel}`, JSON.stringify({ t })).catch(() => {});
    }
    client.onPresence = (p) => {
      if (!p.online && seen.delete(p.user)) render();
    };
    body.addEventListener("rd:live-ready", async () => {
      try {
        await client.join(channel);
        const page = await client.history(conv, 30);
        for (const ev of page.items) see(ev, ev.ts);
      } catch (err) {
        return;
      }
      announce("viewing");
      if (!box.dataset.ready) {
        setInterval(() => announce("viewing"), 20000);
        setInterval(render, 2000);
      }
      box.dataset.ready = "1";
    });
    let lastTyping = 0;
    document.getElementById("reply-body")?.addEventListener("input", () => {
      if (Date.now() - lastTyping > 4000) {
        lastTyping = Date.now();
        announce("typing");
      }
    });
    window.addEventListener("pagehide", () => announce("left"));
    return (ev) => see(ev, Date.now());
  }

  function ticketPage() {
    const ticket = body.dataset.ticket;
    const live = document.getElementById("live");
    const side = document.getElementById("side");
    // The side column (properties, attachments, rating) follows live changes too, unless
    // the user is in the middle of editing one of its forms.
    let sideDirty = false;
    side?.addEventListener("input", () => { sideDirty = true; });
    side?.addEventListener("change", () => { sideDirty = true; });
    const refresh = debounce(async () => {
      await refreshInto(`${PREFIX}/tickets/${ticket}?fragment=live`, live);
      if (side && !sideDirty && !side.contains(document.activeElement)) {
        await refreshInto(`${PREFIX}/tickets/${ticket}?fragment=side`, side);
      }
      body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
    }, 80);
    const channels = [`desk-t-${ticket}`];
    const box = document.getElementById("war-room");
    const collision = body.dataset.collision;
    let showChat = null;
    let seeAgent = null;
    const client = connectLive(ticket, channels, (ev) => {
      if (isNotice(ev, `desk-t-${ticket}`)) refresh();
      else if (seeAgent && ev.conv === `ch:${collision}`) seeAgent(ev);
      else if (showChat) showChat(ev);
    });
    // Whatever changed between rendering this page and joining its channel (the
    // automatic acknowledgement of a ticket just filed) is fetched once on joining.
    body.addEventListener("rd:live-ready", () => refresh());
    if (client && box) showChat = setupWarRoom(client, box);
    if (client && collision && document.getElementById("collision")) seeAgent = setupCollision(client, collision);
    // Keyboard: Ctrl/Cmd+Enter sends the reply; "r" jumps to it; "g q" back to the queue.
    const replyBody = document.getElementById("reply-body");
    replyBody?.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        document.getElementById("send-reply")?.click();
      }
    });
    let lastKey = "";
    document.addEventListener("keydown", (e) => {
      const tag = (e.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "r") {
        e.preventDefault();
        replyBody?.focus();
      } else if (e.key === "q" && lastKey === "g" && body.dataset.role === "agent") {
        location.assign(`${PREFIX}/queue`);
      }
      lastKey = e.key;
    });
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
        a.href = hit.url || `/console/kb/${encodeURIComponent(hit.slug)}`;
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
    else if (page === "portal") portalPage();
    else if (page === "ticket") ticketPage();
    else if (page === "new-ticket") newTicketPage();
    else if (page === "quality") qualityPage();
  });
})();
