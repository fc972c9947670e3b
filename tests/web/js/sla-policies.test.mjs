// Browser scenario for the console's SLA policy pages (docs/console.md, "SLA policies"),
// run by tests/web/test_console_policies_browser.py against a real node with demo data:
//   CONSOLE_URL=http://127.0.0.1:PORT SCREENSHOTS=bench/screenshots node --test sla-policies.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { BASE, SHOTS, launch, signIn } from "./browser.mjs";

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

function session(email) {
  return signIn(browser, email);
}

async function cell(page, priority, metric, name) {
  const row = page.locator(`#policy-targets tr[data-priority="${priority}"][data-metric="${metric}"]`);
  return (await row.locator(`td.${name}`).textContent()).trim();
}

test("an agent adds a policy version in the editor and re-applies it to a ticket", async () => {
  const { context, page } = await session("alice@desk.example");
  await Promise.all([page.waitForNavigation(), page.click("#nav-policies")]);
  assert.match(page.url(), /\/console\/sla\/policies$/);
  const before = await page.locator('#policy-list tr[data-policy="default"] li[data-version]').count();
  assert.ok(before >= 1);
  await Promise.all([page.waitForNavigation(), page.click("#new-version-default")]);

  // The editor starts from the latest version; a contract term with a mistake first.
  const draft = JSON.parse(await page.inputValue("#policy-text"));
  assert.equal(draft.id, undefined);
  draft.name = "Contract 2027";
  draft.targets.P1.resolution = { calendar: "business", kind: "end_of_nth_business_day", cutoff: "15:00" };
  await page.fill("#policy-text", JSON.stringify(draft, null, 2));
  await Promise.all([page.waitForNavigation(), page.click("#store-version")]);
  assert.match(await page.textContent("#policy-error"), /policy\.bad_target.*needs n/);
  assert.equal(JSON.parse(await page.inputValue("#policy-text")).name, "Contract 2027", "text kept");
  await page.screenshot({ path: `${SHOTS}/sla-policy-editor.png`, fullPage: false });

  // Fixed: resolved by the end of the next business day, cut-off 15:00, at least 2 h.
  draft.targets.P1.resolution = { ...draft.targets.P1.resolution, n: 1, min_seconds: 7200 };
  draft.metric_pause_statuses = { first_response: [] };
  await page.fill("#policy-text", JSON.stringify(draft, null, 2));
  await Promise.all([page.waitForNavigation(), page.click("#store-version")]);
  const version = Number(page.url().match(/default\/versions\/(\d+)/)[1]);
  assert.equal(version, before + 1);
  assert.ok(await page.locator("#policy-stored").isVisible());
  assert.equal(await cell(page, "P1", "resolution", "value"), "end of the next business day");
  assert.equal(await cell(page, "P1", "resolution", "cutoff"), "15:00 local");
  assert.equal(await cell(page, "P1", "resolution", "minimum"), "2 h");
  assert.equal(await cell(page, "P1", "first_response", "pauses"), "none (never paused) (own list)");
  assert.equal(await page.locator("script:not([src])").count(), 0, "no inline script");
  await page.screenshot({ path: `${SHOTS}/sla-policies.png`, fullPage: true });

  // Ticket 2 (seeded P1) runs under an older version until the agent re-applies the new one.
  await page.goto(`${BASE}/console/tickets/2`);
  const was = (await page.textContent("#ticket-policy")).trim();
  assert.notEqual(was, `default v${version}`);
  await page.selectOption("#policy-version-select", `${version}:default`);
  await Promise.all([page.waitForNavigation(), page.click("#apply-policy")]);
  assert.equal((await page.textContent("#ticket-policy")).trim(), `default v${version}`);
  const line = page.locator("#event-log tr:has-text('SLA policy applied')");
  assert.equal(await line.count(), 1);
  assert.match(await line.textContent(), new RegExp(`from ${was} to default v${version}`));
  await page.locator("#sla-policy").scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${SHOTS}/sla-policy-ticket.png`, fullPage: true });
  await context.close();

  // Customers see neither the pages nor the control.
  const customer = await session("dana@acme.example");
  assert.equal((await customer.page.goto(`${BASE}/console/sla/policies`)).status(), 403);
  await customer.page.goto(`${BASE}/console/tickets/2`);
  assert.equal(await customer.page.locator("#policy-apply-form, #ticket-policy, #nav-policies").count(), 0);
  await customer.context.close();
});
