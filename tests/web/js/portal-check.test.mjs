// The portal's "Run a check" (docs/console.md §run a check), in headless Chromium against a
// real node with the demo data, run by tests/web/test_portal_check_browser.py:
//   CONSOLE_URL=http://127.0.0.1:PORT node --test portal-check.test.mjs
// The browser's clock is set 20 s fast; the check measures that NTP-style, the report is
// attached to the ticket, and the automatic acknowledgement names the skewed clock.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { BASE, SHOTS, launch } from "./browser.mjs";

const AHEAD_MS = 20000;

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test("customer runs a check from the new-ticket form; the acknowledgement uses it", async () => {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  // A computer whose clock runs 20 s fast (wall clock only; performance.now is untouched).
  await context.addInitScript((ahead) => {
    const realNow = Date.now;
    const RealDate = Date;
    Date.now = () => realNow() + ahead;
    globalThis.Date = class extends RealDate {
      constructor(...args) {
        if (args.length) super(...args);
        else super(realNow() + ahead);
      }
      static now() {
        return realNow() + ahead;
      }
    };
  }, AHEAD_MS);
  const page = await context.newPage();
  await page.goto(`${BASE}/console/sign-in`);
  await page.fill('input[name="email"]', "dana@acme.example");
  await page.fill('input[name="password"]', "demo-password");
  await Promise.all([page.waitForNavigation(), page.click('#sign-in-form button[type="submit"]')]);
  await page.goto(`${BASE}/console/portal/new`);

  await page.waitForSelector("#run-check:not([disabled])");
  await page.click("#run-check");
  await page.waitForFunction(() => {
    const s = document.getElementById("check-result").dataset.status;
    return s && s !== "running";
  }, null, { timeout: 20000 });
  const statuses = await page.$$eval("#check-result li", (items) =>
    Object.fromEntries(items.map((li) => [li.dataset.check, li.dataset.status])));
  assert.deepEqual(
    statuses,
    { websocket: "pass", login: "pass", rtt_loss: "pass", clock_skew: "warn", round_trip: "pass" },
  );
  const skew = await page.textContent('#check-result li[data-check="clock_skew"]');
  assert.match(skew, /20\.\d\d s ahead of the server's/);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/portal-check.png`, fullPage: true });

  await page.fill("#subject", "Timestamps look wrong in our app");
  await page.fill('textarea[name="description"]', "Message times are off for some users.");
  await page.fill('input[name="app_id"]', "acme-chat");
  await Promise.all([page.waitForNavigation(), page.click("#file-ticket")]);
  const id = Number(page.url().match(/tickets\/(\d+)/)[1]);
  assert.ok(id > 0);
  // The report went in with the ticket, as the doctor's table and fenced JSON.
  const text = await page.textContent("body");
  assert.match(text, /relaydesk portal check/);

  // The automatic acknowledgement (seconds after filing) names the clock from the report.
  const ack = page.locator("#conversation .comment.author-automation .body");
  const deadline = Date.now() + 20000;
  while ((await ack.count()) === 0 && Date.now() < deadline) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  assert.ok((await ack.count()) > 0, "no automatic acknowledgement");
  const said = await ack.first().textContent();
  assert.match(said, /clock of device browser-[0-9a-f]+ is 20\.\d s ahead/, said);
  assert.match(said, /browser-[0-9a-f]+/, said);
  await context.close();
});
