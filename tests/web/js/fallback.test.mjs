// The browser client over the HTTP-streaming fallback (docs/protocol.md §9): the page's
// WebSockets are blocked by a routing rule, so the client must fall back to the stream,
// deliver, resume after a lost stream and deliver each message exactly once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.NODE_URL;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
after(async () => {
  await browser?.close();
});

test("the browser client falls back to the stream and delivers exactly once", async () => {
  const page = await browser.newPage();
  let blocked = 0;
  await page.routeWebSocket(/\/v1\/ws/, (ws) => {
    blocked += 1;
    ws.close({ code: 1008, reason: "blocked by policy" });
  });
  await page.goto(`${BASE}/healthz`);
  await page.addScriptTag({ url: "/console/static/relaydesk.js" });
  const result = await page.evaluate(
    async ({ tokenA, tokenB }) => {
      const url = `ws://${location.host}/v1/ws`;
      const alice = new window.RelaydeskClient({ url, device: "ba", token: async () => tokenA });
      const bob = new window.RelaydeskClient({ url, device: "bb", token: async () => tokenB, cursor: 0 });
      const got = [];
      bob.onEvent = (item) => {
        if (item.kind === "msg") got.push(item.text);
      };
      await alice.connect();
      await bob.connect();
      const until = async (pred) => {
        for (let i = 0; i < 300 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
      };
      await until(() => alice.state === "SYNCED" && bob.state === "SYNCED");
      const kinds = [alice.ws.constructor.name, bob.ws.constructor.name];
      for (let i = 0; i < 30; i++) await alice.publish("user:bobweb", `m${i}`);
      await until(() => got.length >= 30);
      bob.ws.end(1006); // the stream is lost: bob resumes after what it received
      for (let i = 30; i < 60; i++) await alice.publish("user:bobweb", `m${i}`);
      await until(() => got.length >= 60 && bob.state === "SYNCED");
      await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive now
      const reconnectedOver = bob.ws.constructor.name;
      alice.close();
      bob.close();
      return { kinds, got, reconnectedOver };
    },
    { tokenA: process.env.TOKEN_A, tokenB: process.env.TOKEN_B },
  );
  assert.ok(blocked >= 2, `WebSocket attempts blocked: ${blocked}`);
  assert.deepEqual(result.kinds, ["StreamSocket", "StreamSocket"]);
  assert.equal(result.reconnectedOver, "StreamSocket");
  assert.deepEqual(result.got, Array.from({ length: 60 }, (_, i) => `m${i}`));
  await page.close();
});
