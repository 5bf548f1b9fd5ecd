// The demo pages in headless Chromium (Debian's), driven by playwright-core,
// against a real `temppass serve` with the demo enabled and TTLs of seconds.
// Each test saves screenshots under web/test-results/ for a person to look at.
//
// CHROMIUM=/path/to/chromium overrides the browser (default /usr/bin/chromium).

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS = join(WEB, "test-results");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
const EXPIRED_MESSAGE = "Your Temp Pass has expired, please log in with your cable provider";

// TTLs of the test configuration; the waits below are these plus slack.
const FREE_PREVIEW_MS = 6_000;
const CHAIN_PASS_MS = 5_000;
const SLACK_MS = 8_000;

let server;
let browser;

before(async () => {
  mkdirSync(RESULTS, { recursive: true });
  server = await startServer({
    demo: true,
    ttls: { TempPass: `${FREE_PREVIEW_MS / 1000}s`, TempPassEvent: `${CHAIN_PASS_MS / 1000}s`, TempPassDaily: `${CHAIN_PASS_MS / 1000}s` },
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A fresh browser profile (a new device) on a demo page; page errors and failed requests are collected to be asserted empty. */
async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Failed responses are judged below, by URL.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on("response", (response) => {
    // A used-up pass answers its profile with 403: the pages expect that one.
    const expected = response.status() === 403 && new URL(response.url()).pathname.includes("/profiles/");
    if (response.status() >= 400 && !expected) problems.push(`HTTP ${response.status()} ${response.url()}`);
  });
  await page.goto(`${server.baseUrl}/demo/${name}`);
  return { page, context, problems };
}

const byTestId = (id) => `[data-testid="${id}"]`;

async function waitForState(page, id, state, timeout = 10_000) {
  await page.waitForSelector(`${byTestId(id)}[data-state="${state}"]`, { state: "attached", timeout });
}

async function text(page, id) {
  return (await page.textContent(byTestId(id)))?.trim();
}

async function visible(page, id) {
  return page.isVisible(byTestId(id));
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: true });
}

/** The regular MVPDs the picker shows. */
async function pickerMvpds(page) {
  return page.$$eval(`${byTestId("mvpd-list")} button`, (buttons) => buttons.map((button) => button.textContent.trim()));
}

describe("demo pages", { concurrency: true }, () => {
  test("index lists the pages and shows this browser's device id", async () => {
    const { page, context, problems } = await openPage("");
    await page.waitForFunction(() => /^[0-9a-f]{32}$/.test(document.querySelector('[data-testid="device-id"]').textContent));
    for (const link of ["auto-login", "picker", "multi-temppass", "promotional"]) {
      assert.equal(await page.getAttribute(byTestId(`link-${link}`), "href"), `${link}.html`);
    }
    await screenshot(page, "index");
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("auto-login plays with a media token, counts down, then shows the expiry message and the picker", async () => {
    const { page, context, problems } = await openPage("auto-login.html");
    await waitForState(page, "status", "playing");
    assert.match(await text(page, "media-token"), /^[\w-]+\.[\w-]+\.[\w-]+$/, "a compact JWS media token");
    const secondsLeft = Number(await page.getAttribute(byTestId("countdown"), "data-seconds-left"));
    assert.ok(secondsLeft > 0 && secondsLeft <= FREE_PREVIEW_MS / 1000, `countdown ${secondsLeft}`);
    assert.equal(await visible(page, "expired-message"), false);
    await screenshot(page, "auto-login-playing");

    await waitForState(page, "status", "expired", FREE_PREVIEW_MS + SLACK_MS);
    assert.equal(await text(page, "expired-message"), EXPIRED_MESSAGE);
    assert.equal(await visible(page, "player"), false);
    assert.deepEqual(await pickerMvpds(page), ["Cablevision", "Xfinity"]);
    await screenshot(page, "auto-login-expired");

    // Coming back later: the pass is used up, so straight to the message and the picker.
    await page.reload();
    await waitForState(page, "status", "expired");
    assert.equal(await text(page, "expired-message"), EXPIRED_MESSAGE);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("the picker hides TempPass MVPDs, and the free-preview button once used", async () => {
    const { page, context, problems } = await openPage("picker.html");
    await waitForState(page, "status", "choosing");
    assert.deepEqual(await pickerMvpds(page), ["Cablevision", "Xfinity"], "no TempPass MVPD in the picker");
    assert.equal(await visible(page, "free-preview"), true);
    await screenshot(page, "picker");

    await page.click(byTestId("free-preview"));
    await waitForState(page, "status", "playing");
    assert.equal(await visible(page, "free-preview"), false, "used: the button is gone");
    assert.match(await text(page, "media-token"), /^[\w-]+\.[\w-]+\.[\w-]+$/);
    await screenshot(page, "picker-free-preview-playing");

    // The flag survives a reload: no button, the preview carries on.
    await page.reload();
    await waitForState(page, "status", "playing");
    assert.equal(await visible(page, "free-preview"), false);

    await waitForState(page, "status", "expired", FREE_PREVIEW_MS + SLACK_MS);
    assert.equal(await text(page, "expired-message"), EXPIRED_MESSAGE);
    assert.equal(await visible(page, "free-preview"), false);
    assert.deepEqual(await pickerMvpds(page), ["Cablevision", "Xfinity"]);
    await screenshot(page, "picker-expired");
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("the multi-TempPass chain moves from the first pass to the daily pass, then to the picker", async () => {
    const { page, context, problems } = await openPage("multi-temppass.html");
    await page.waitForSelector(`${byTestId("player")}[data-pass="TempPassEvent"]`, { state: "visible" });
    await waitForState(page, "status", "playing");
    await waitForState(page, "pass-TempPassEvent", "in use");
    await waitForState(page, "pass-TempPassDaily", "next");
    assert.equal(await text(page, "current-pass"), "Four hours of the big event");
    await screenshot(page, "multi-temppass-first-pass");

    await page.waitForSelector(`${byTestId("player")}[data-pass="TempPassDaily"]`, {
      state: "visible",
      timeout: CHAIN_PASS_MS + SLACK_MS,
    });
    await waitForState(page, "status", "playing");
    await waitForState(page, "pass-TempPassEvent", "used up");
    await waitForState(page, "pass-TempPassDaily", "in use");
    assert.equal(await text(page, "current-pass"), "Ten minutes a day");
    await screenshot(page, "multi-temppass-daily-pass");

    await waitForState(page, "status", "expired", CHAIN_PASS_MS + SLACK_MS);
    await waitForState(page, "pass-TempPassDaily", "used up");
    assert.equal(await text(page, "expired-message"), EXPIRED_MESSAGE);
    await screenshot(page, "multi-temppass-expired");
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("the promotional page counts titles down per e-mail and refuses the one past the cap", async () => {
    const { page, context, problems } = await openPage("promotional.html");
    await page.fill(byTestId("email"), `viewer-${Date.now()}@example.com`);
    await page.click(byTestId("email-submit"));
    await waitForState(page, "status", "choosing");
    assert.equal(await text(page, "titles-left"), "3");
    assert.equal(await text(page, "titles-used"), "none yet");

    const watch = async (resource, expectedLeft) => {
      await page.click(byTestId(`watch-${resource}`));
      await waitForState(page, "status", "playing");
      await page.waitForFunction(
        ([selector, left]) => document.querySelector(selector)?.textContent === left,
        [byTestId("titles-left"), expectedLeft],
      );
    };
    await watch("res01", "2");
    await watch("res02", "1");
    await screenshot(page, "promotional-one-left");
    await watch("res03", "0");
    assert.equal(await text(page, "titles-used"), "Pilot, The Heist, Night Shift");
    await watch("res01", "0"); // a title already used plays again without a slot

    await page.click(byTestId("watch-res04"));
    await waitForState(page, "status", "refused");
    assert.match(await text(page, "refused"), /“Finale” is not free/);
    assert.equal(await visible(page, "player"), false);
    assert.deepEqual(await pickerMvpds(page), ["Cablevision", "Xfinity"]);
    await waitForState(page, "title-res04", "locked");
    await waitForState(page, "title-res01", "used");
    await screenshot(page, "promotional-refused");
    assert.deepEqual(problems, []);
    await context.close();
  });
});

/**
 * A programmer's own site on another origin (docs/web-sdk.md, "Putting it on
 * your own site"): the page holds the software statement and calls temppass
 * across origins, so every call goes through CORS, preflights included.
 */
async function startOwnSite(softwareStatement) {
  const sdk = readFileSync(join(WEB, "dist", "temppass.js"));
  const page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>my site</title></head>
<body><h1>My site</h1><pre data-testid="result" data-state="running" style="white-space: pre-wrap; word-break: break-all">running</pre>
<script type="module">
  import { createClient, regularMvpds } from "./temppass.js";
  const result = document.querySelector('[data-testid="result"]');
  try {
    const client = createClient({ baseUrl: ${JSON.stringify(server.baseUrl)}, serviceProvider: "REF30", softwareStatement: ${JSON.stringify(softwareStatement)} });
    const config = await client.configuration();
    const choice = await client.chooseTempPass(["TempPass"]);
    const decision = await client.authorize(choice.mvpd, "res01");
    result.textContent = JSON.stringify({ picker: regularMvpds(config).map((mvpd) => mvpd.id), mvpd: choice.mvpd, authorized: decision.authorized, token: decision.token.serializedToken }, null, 1);
    result.dataset.state = "done";
  } catch (error) {
    result.textContent = String(error && error.code ? error.code + ": " + error.message : error);
    result.dataset.state = "failed";
  }
</script></body></html>`;
  const site = createServer((request, response) => {
    if (request.url === "/temppass.js") {
      response.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" }).end(sdk);
    } else if (request.url === "/") {
      response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(page);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  return site;
}

test("a page on another origin uses the SDK through CORS", async () => {
  const site = await startOwnSite(await server.createApp("own-site"));
  // localhost:<port> is another origin than 127.0.0.1:<port>; the custom headers (Authorization,
  // AP-Device-Identifier) make every API call a preflighted CORS request.
  const origin = `http://localhost:${site.address().port}`;
  assert.notEqual(new URL(origin).origin, new URL(server.baseUrl).origin);
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${origin}/`);
    await page.waitForSelector('[data-testid="result"]:not([data-state="running"])', { state: "attached", timeout: 10_000 });
    const state = await page.getAttribute('[data-testid="result"]', "data-state");
    const result = await text(page, "result");
    assert.equal(state, "done", result);
    const answer = JSON.parse(result);
    assert.deepEqual(answer.picker, ["Cablevision", "Comcast_SSO"]);
    assert.equal(answer.mvpd, "TempPass");
    assert.equal(answer.authorized, true);
    assert.match(answer.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    await screenshot(page, "own-site-cross-origin");
  } finally {
    await context.close();
    await new Promise((resolve) => site.close(resolve));
  }
});
