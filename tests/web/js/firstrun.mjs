// The browser half of tests/web/test_first_run_e2e.py (a deployment without demo data):
//   node firstrun.mjs signup  BASE AGENT_LINK CUSTOMER_LINK STATE_DIR  -> {"ticket": N}
//   node firstrun.mjs resume  BASE TICKET STATE_DIR                     -> {"ok": true}
// "signup": both people open their invite links, choose passwords and are signed in;
// the customer files a ticket on their organisation's app, the agent answers it; the
// browsers' cookies are saved.  "resume" (after a server restart) reopens both saved
// browsers and checks that nobody was signed out.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [mode, BASE, ...rest] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"];

async function accept(browser, link, password) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(link);
  await page.fill('input[name="password"]', password);
  await page.fill('input[name="password2"]', password);
  await Promise.all([page.waitForNavigation(), page.click('#welcome-form button[type="submit"]')]);
  return { context, page };
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
try {
  if (mode === "signup") {
    const [agentLink, customerLink, dir] = rest;
    const customer = await accept(browser, customerLink, "blue kettle at dawn 42");
    assert.match(customer.page.url(), /\/console\/portal$/);
    const agent = await accept(browser, agentLink, "green lantern by noon 7");
    assert.match(agent.page.url(), /\/console\/queue$/);

    const c = customer.page;
    await c.goto(`${BASE}/console/portal/new`);
    await c.fill('input[name="subject"]', "Messages are delayed for our Android users");
    await c.fill('textarea[name="description"]', "Since this morning, about a minute late.");
    await c.fill('input[name="app_id"]', "acme-chat");
    await Promise.all([c.waitForNavigation(), c.click("#file-ticket")]);
    const match = c.url().match(/\/console\/tickets\/(\d+)/);
    assert.ok(match, `ticket page after filing: ${c.url()}`);
    const ticket = Number(match[1]);

    const a = agent.page;
    await a.goto(`${BASE}/console/queue`);
    await a.waitForSelector(`#queue-rows tr[data-ticket="${ticket}"]`);
    await a.goto(`${BASE}/console/tickets/${ticket}`);
    await a.fill("#reply-form textarea", "We are on it: a node in eu-west is draining.");
    await Promise.all([a.waitForNavigation(), a.click("#send-reply")]);
    assert.ok((await a.content()).includes("a node in eu-west is draining"));

    await c.goto(`${BASE}/console/tickets/${ticket}`);
    assert.ok((await c.content()).includes("a node in eu-west is draining"));
    await customer.context.storageState({ path: `${dir}/customer.json` });
    await agent.context.storageState({ path: `${dir}/agent.json` });
    console.log(JSON.stringify({ ticket }));
  } else if (mode === "resume") {
    const [ticket, dir] = rest;
    const customer = await browser.newContext({ storageState: `${dir}/customer.json` });
    const c = await customer.newPage();
    await c.goto(`${BASE}/console/tickets/${ticket}`);
    assert.match(c.url(), new RegExp(`/console/tickets/${ticket}$`), "customer still signed in");
    assert.ok((await c.content()).includes("a node in eu-west is draining"));
    const agent = await browser.newContext({ storageState: `${dir}/agent.json` });
    const a = await agent.newPage();
    await a.goto(`${BASE}/console/queue`);
    assert.match(a.url(), /\/console\/queue$/, "agent still signed in");
    console.log(JSON.stringify({ ok: true }));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} finally {
  await browser.close();
}
