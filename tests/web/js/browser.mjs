// One Chromium start-up and sign-in for every browser scenario file (console.test.mjs,
// sla-policies.test.mjs), so that the launch flags and the session helper live in one place.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

export const BASE = process.env.CONSOLE_URL;
export const SHOTS = process.env.SCREENSHOTS || "bench/screenshots";
export const PASSWORD = "demo-password";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Headless Chromium (Debian's), with the screenshot folder made. */
export async function launch() {
  assert.ok(BASE, "CONSOLE_URL is required");
  mkdirSync(SHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh temporary --user-data-dir itself.
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** A fresh context signed in as ``email``; an unexpected dialog fails the scenario. */
export async function signIn(browser, email, viewport = { width: 1360, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("dialog", async (d) => {
    await d.dismiss();
    throw new Error(`unexpected dialog: ${d.message()}`);
  });
  await page.goto(`${BASE}/console/sign-in`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click('#sign-in-form button[type="submit"]')]);
  return { context, page };
}

/** A full-page screenshot into SHOTS. */
export async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}
