// The SDK against a real `temppass serve` (short TTLs): registration, tokens,
// device id, the typed calls and their errors, chooseTempPass, watch, identity.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

import {
  createClient,
  hashIdentity,
  identityHeader,
  isTrialOver,
  memoryStorage,
  regularMvpds,
  tempPassMvpds,
  TempPassError,
} from "../dist/temppass.js";
import { startServer } from "./server.mjs";

let server;
let statement;

before(async () => {
  server = await startServer({ ttls: { TempPass: "3s", TempPassEvent: "2s", TempPassDaily: "2s" }, mediaTokenTtl: "1s" });
  statement = await server.createApp("sdk-tests");
});

after(async () => {
  await server?.stop();
});

/** A fetch that records each request's method and path. */
function recordingFetch() {
  const calls = [];
  const fetchFn = (url, init) => {
    calls.push(`${init.method ?? "GET"} ${new URL(url).pathname}`);
    return fetch(url, init);
  };
  return { calls, fetchFn, count: (prefix) => calls.filter((call) => call.startsWith(prefix)).length };
}

function client({ storage = memoryStorage(), fetchFn, softwareStatement = statement } = {}) {
  const options = { baseUrl: server.baseUrl, serviceProvider: "REF30", softwareStatement, storage };
  if (fetchFn) options.fetch = fetchFn;
  return createClient(options);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects when `promise` takes longer than `ms`: every wait in these tests is bounded. */
function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

test("the first call registers a client and gets a token; later calls and clients reuse them from storage", async () => {
  const storage = memoryStorage();
  const { calls, fetchFn, count } = recordingFetch();
  const first = client({ storage, fetchFn });
  const config = await first.configuration();
  assert.equal(config.requestor.id, "REF30");
  await first.configuration();
  const second = client({ storage, fetchFn });
  await second.configuration();
  assert.equal(count("POST /o/client/register"), 1, calls.join("\n"));
  assert.equal(count("POST /o/client/token"), 1, calls.join("\n"));
  assert.equal(count("GET /api/v2/REF30/configuration"), 3);
});

test("concurrent first calls share one registration and one token", async () => {
  const { fetchFn, count } = recordingFetch();
  const sdk = client({ fetchFn });
  await Promise.all([sdk.configuration(), sdk.configuration(), sdk.profile("TempPass"), sdk.preauthorize("TempPass", ["res01"])]);
  assert.equal(count("POST /o/client/register"), 1);
  assert.equal(count("POST /o/client/token"), 1);
});

test("a refused access token is renewed once and the call succeeds", async () => {
  const storage = memoryStorage();
  const { fetchFn, count } = recordingFetch();
  const sdk = client({ storage, fetchFn });
  await sdk.configuration();
  const tokenKey = `temppass:${server.baseUrl}:REF30:token`;
  const cached = JSON.parse(storage.getItem(tokenKey));
  storage.setItem(tokenKey, JSON.stringify({ ...cached, accessToken: "not-a-token" }));
  await sdk.configuration();
  assert.equal(count("GET /api/v2/REF30/configuration"), 3, "the refused call is made once more");
  assert.equal(count("POST /o/client/token"), 2);
  assert.equal(count("POST /o/client/register"), 1, "the client itself is still good");
  assert.notEqual(JSON.parse(storage.getItem(tokenKey)).accessToken, "not-a-token");
});

test("a client the server does not know is registered again", async () => {
  const storage = memoryStorage();
  storage.setItem(
    `temppass:${server.baseUrl}:REF30:client`,
    JSON.stringify({ softwareStatement: statement, clientId: "forgotten", clientSecret: "forgotten" }),
  );
  const { fetchFn, count } = recordingFetch();
  const config = await client({ storage, fetchFn }).configuration();
  assert.equal(config.requestor.id, "REF30");
  assert.equal(count("POST /o/client/register"), 1);
  assert.equal(count("POST /o/client/token"), 2, "once with the forgotten client, once with the new one");
});

test("a second 401 is thrown as a TempPassError with the enhanced error", async () => {
  // An application of another service provider: every token it gets is refused for REF30.
  const otherStatement = await server.createApp("other-sp", { serviceProvider: "OTHER" });
  const { fetchFn, count } = recordingFetch();
  const sdk = client({ softwareStatement: otherStatement, fetchFn });
  const error = await sdk.configuration().then(
    () => assert.fail("a token of OTHER must not work for REF30"),
    (error) => error,
  );
  assert.ok(error instanceof TempPassError, String(error));
  assert.equal(error.status, 401);
  assert.equal(error.code, "invalid_access_token_service_provider");
  assert.equal(error.action, "application-registration");
  assert.ok(error.message.length > 0);
  assert.equal(count("GET /api/v2/REF30/configuration"), 2, "tried once more with a renewed token, then gave up");
});

test("a revoked application surfaces the registration error", async () => {
  const revokedStatement = await server.createApp("soon-revoked");
  const storage = memoryStorage();
  const sdk = client({ softwareStatement: revokedStatement, storage });
  await sdk.configuration();
  await server.revokeApp("soon-revoked");
  // SPEC.md §6: refused within 5 s (a server reuses a looked-up token for up to 2 s).
  const refused = async () => {
    for (const started = Date.now(); Date.now() - started < 5_000; ) {
      const error = await sdk.configuration().then(() => undefined, (error) => error);
      if (error) return error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return undefined;
  };
  const error = await within(10_000, refused(), "revoked");
  assert.ok(error instanceof TempPassError, String(error));
  // 401 on the API, the token request refused (unauthorized_client), registering again refused too.
  assert.deepEqual([error.status, error.code, error.action], [400, "unapproved_software_statement", "application-registration"]);
});

test("the device id is random, stable in its storage, and sent as a base64 fingerprint", async () => {
  const storage = memoryStorage();
  const sdk = client({ storage });
  const deviceId = sdk.deviceId;
  assert.match(deviceId, /^[0-9a-f]{32}$/);
  assert.equal(client({ storage }).deviceId, deviceId);
  assert.notEqual(client().deviceId, deviceId);
  let header;
  const spy = client({
    storage,
    fetchFn: (url, init) => {
      if (url.includes("/profiles/")) header = init.headers["AP-Device-Identifier"];
      return fetch(url, init);
    },
  });
  await spy.profile("TempPass");
  assert.equal(header, `fingerprint ${Buffer.from(deviceId).toString("base64")}`);
});

test("the configuration splits into the picker's regular MVPDs and the TempPass MVPDs", async () => {
  const config = await client().configuration();
  assert.deepEqual(regularMvpds(config).map((mvpd) => mvpd.id), ["Cablevision", "Comcast_SSO"]);
  assert.deepEqual(
    tempPassMvpds(config).map((mvpd) => mvpd.id),
    ["TempPass", "flexibleTempPass", "TempPassEvent", "TempPassDaily"],
  );
  assert.deepEqual(regularMvpds(config.requestor.mvpds), regularMvpds(config));
  assert.equal(regularMvpds(config)[1].displayName, "Xfinity");
});

test("authorize starts the trial, returns a media token, and the trial ends with an item-level deny and a 403 profile", async () => {
  const sdk = client();
  const prospective = await sdk.profile("TempPass");
  assert.equal(prospective.type, "temporary");
  assert.equal(prospective.notAfter - prospective.notBefore, 3_000, "prospective: now + ttl");
  assert.equal(await sdk.profile("Cablevision"), null, "a regular MVPD has no temporary profile");

  const permit = await sdk.authorize("TempPass", "res01");
  assert.equal(permit.authorized, true);
  assert.equal(permit.resource, "res01");
  assert.equal(permit.mvpd, "TempPass");
  assert.equal(permit.serviceProvider, "REF30");
  assert.match(permit.token.serializedToken, /^[\w-]+\.[\w-]+\.[\w-]+$/, "a compact JWS");
  assert.ok(permit.token.notAfter <= permit.notAfter, "the token never outlives the trial");
  const active = await sdk.profile("TempPass");
  assert.equal(active.notAfter, permit.notAfter, "the profile now shows the trial");

  await sleep(permit.notAfter - permit.notBefore + 300);
  const deny = await sdk.authorize("TempPass", "res01");
  assert.equal(deny.authorized, false);
  assert.equal(deny.error.code, "temporary_access_duration_limit_exceeded");
  assert.equal(deny.error.status, 403);
  assert.equal(deny.error.action, "authentication");
  assert.ok(isTrialOver(deny.error));
  assert.equal(deny.token, undefined);

  const error = await sdk.profile("TempPass").then(() => undefined, (error) => error);
  assert.ok(error instanceof TempPassError);
  assert.equal(error.status, 403);
  assert.equal(error.code, "temporary_access_duration_limit_exceeded");
  assert.equal(error.trialOver, true);
});

test("request-level errors are thrown with their code, status and action", async () => {
  const sdk = client();
  const unknown = await sdk.profile("NoSuchMvpd").then(() => undefined, (error) => error);
  assert.ok(unknown instanceof TempPassError);
  assert.deepEqual([unknown.status, unknown.code, unknown.action], [400, "invalid_integration", "none"]);
  assert.match(unknown.trace ?? "", /^[0-9a-f-]{36}$/);
  assert.equal(unknown.trialOver, false);

  const noIdentity = await sdk.profile("flexibleTempPass").then(() => undefined, (error) => error);
  assert.ok(noIdentity instanceof TempPassError);
  assert.deepEqual([noIdentity.status, noIdentity.code], [400, "invalid_header_identity_for_temporary_access"]);

  const empty = await sdk.preauthorize("TempPass", []).then(() => undefined, (error) => error);
  assert.deepEqual([empty?.status, empty?.code], [400, "invalid_parameter_resources"]);
});

test("an identity error of a decision is item-level, not thrown", async () => {
  const decision = await client().authorize("flexibleTempPass", "res01");
  assert.equal(decision.authorized, false);
  assert.equal(decision.error.code, "invalid_header_identity_for_temporary_access");
});

test("an unreachable server is a TempPassError to retry", async () => {
  const sdk = createClient({ baseUrl: "http://127.0.0.1:9", serviceProvider: "REF30", softwareStatement: statement, storage: memoryStorage() });
  const error = await sdk.configuration().then(() => undefined, (error) => error);
  assert.ok(error instanceof TempPassError);
  assert.deepEqual([error.status, error.code, error.action], [0, "network_error", "retry"]);
});

test("hashIdentity is the SHA-256 hex of the trimmed lower-cased e-mail, and identityHeader wraps it", async () => {
  const expected = createHash("sha256").update("user@domain.com").digest("hex");
  assert.equal(await hashIdentity("  User@Domain.COM \n"), expected);
  const header = await identityHeader("User@domain.com");
  assert.deepEqual(JSON.parse(Buffer.from(header, "base64").toString("utf8")), { email: expected });
  const custom = await identityHeader("user@domain.com", "mail");
  assert.deepEqual(JSON.parse(Buffer.from(custom, "base64").toString("utf8")), { mail: expected });
});

test("a promotional pass counts distinct titles per e-mail across devices and refuses the one past the cap", async () => {
  const identity = await identityHeader(`viewer-${Date.now()}@example.com`);
  const laptop = client();
  const prospective = await laptop.profile("flexibleTempPass", { identity });
  assert.equal(prospective.attributes.remaining_resources.value, 3);
  assert.deepEqual(prospective.attributes.used_assets.value, []);

  const preauthorized = await laptop.preauthorize("flexibleTempPass", ["res01", "res02", "res03", "res04", "res05"], { identity });
  assert.equal(preauthorized.length, 5);
  assert.ok(preauthorized.every((decision) => decision.authorized && decision.token === undefined));
  assert.equal((await laptop.profile("flexibleTempPass", { identity })).attributes.remaining_resources.value, 3, "preauthorize uses no title");

  for (const title of ["res01", "res02"]) {
    assert.equal((await laptop.authorize("flexibleTempPass", title, { identity })).authorized, true, title);
  }
  const phone = client(); // another device, same e-mail: the same trial
  assert.equal((await phone.authorize("flexibleTempPass", "res01", { identity })).authorized, true, "a used title again");
  assert.equal((await phone.authorize("flexibleTempPass", "res03", { identity })).authorized, true);
  const refused = await phone.authorize("flexibleTempPass", "res04", { identity });
  assert.equal(refused.authorized, false);
  assert.equal(refused.error.code, "temporary_access_resources_limit_exceeded");
  assert.ok(isTrialOver(refused.error));

  const exhausted = await laptop.profile("flexibleTempPass", { identity }).then(() => undefined, (error) => error);
  assert.ok(exhausted instanceof TempPassError);
  assert.equal(exhausted.code, "temporary_access_resources_limit_exceeded");
  assert.equal(exhausted.trialOver, true);
});

test("chooseTempPass walks the chain: the first pass, then the daily one, then none", async () => {
  const sdk = client();
  const chain = ["TempPassEvent", "TempPassDaily"];
  assert.equal((await sdk.chooseTempPass(chain))?.mvpd, "TempPassEvent");
  const config = await sdk.configuration();
  const fromConfig = await sdk.chooseTempPass(config);
  assert.equal(fromConfig?.mvpd, "TempPass", "a configuration: its TempPass MVPDs in order");
  const onlyListed = await sdk.chooseTempPass(config.requestor.mvpds.filter((mvpd) => chain.includes(mvpd.id) || !mvpd.isTempPass));
  assert.equal(onlyListed?.mvpd, "TempPassEvent", "regular MVPDs in the list are skipped");

  const first = await sdk.authorize("TempPassEvent", "res01");
  assert.equal(first.authorized, true);
  await sleep(first.notAfter - first.notBefore + 300);
  const daily = await sdk.chooseTempPass(chain);
  assert.equal(daily?.mvpd, "TempPassDaily");
  assert.equal(daily.profile.notAfter - daily.profile.notBefore, 2_000, "prospective daily pass");
  const second = await sdk.authorize("TempPassDaily", "res01");
  await sleep(second.notAfter - second.notBefore + 300);
  assert.equal(await sdk.chooseTempPass(chain), null);
});

test("watch re-authorizes with fresh tokens and fires onExpire exactly once when the trial ends", async () => {
  const { fetchFn, count } = recordingFetch();
  const sdk = client({ fetchFn });
  const permits = [];
  const expiries = [];
  const errors = [];
  let resolveExpired;
  const expired = new Promise((resolve) => (resolveExpired = resolve));
  const started = Date.now();
  const watch = sdk.watch("TempPass", "res07", {
    intervalMs: 60_000,
    onPermit: (permit) => permits.push(permit),
    onExpire: (expiry) => {
      expiries.push(expiry);
      resolveExpired();
    },
    onError: (error) => errors.push(error),
  });
  await within(8_000, expired, "onExpire");
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 2_900, `expired after ${elapsed} ms, before the 3 s trial ended`);
  assert.equal(watch.expired, true);
  assert.equal(expiries.length, 1);
  assert.equal(expiries[0].decision.error.code, "temporary_access_duration_limit_exceeded");
  // The media token lives 1 s, so the watch came back for fresh ones before the 60 s interval.
  assert.ok(permits.length >= 3, `${permits.length} permits`);
  assert.equal(new Set(permits.map((permit) => permit.token.serializedToken)).size, permits.length);
  assert.equal(new Set(permits.map((permit) => permit.notAfter)).size, 1, "one trial, one end");
  assert.deepEqual(errors, []);
  const checks = count("POST /api/v2/REF30/decisions/authorize/TempPass");
  await sleep(1_500);
  assert.equal(count("POST /api/v2/REF30/decisions/authorize/TempPass"), checks, "no re-check after the end");
  assert.equal(expiries.length, 1);
});

test("a stopped watch makes no more calls and never fires", async () => {
  const { fetchFn, count } = recordingFetch();
  const sdk = client({ fetchFn });
  let permitted;
  const firstPermit = new Promise((resolve) => (permitted = resolve));
  let fired = 0;
  const watch = sdk.watch("TempPass", "res08", { onPermit: permitted, onExpire: () => fired++ });
  await within(5_000, firstPermit, "first permit");
  watch.stop();
  const checks = count("POST /api/v2/REF30/decisions/authorize/TempPass");
  await sleep(3_500);
  assert.equal(count("POST /api/v2/REF30/decisions/authorize/TempPass"), checks);
  assert.equal(fired, 0);
  assert.equal(watch.expired, false);
});

test("a watch refused for another reason than the trial's end reports an error and never fires onExpire", async () => {
  const sdk = client({});
  let resolveError;
  const failed = new Promise((resolve) => (resolveError = resolve));
  let fired = 0;
  // A promotional MVPD without the identity header: the server refuses every check.
  const watch = sdk.watch("flexibleTempPass", "res09", { onExpire: () => fired++, onError: resolveError });
  const error = await within(5_000, failed, "onError");
  assert.equal(error.authorized, false);
  assert.equal(error.error.code, "invalid_header_identity_for_temporary_access");
  assert.equal(fired, 0);
  assert.equal(watch.expired, false);
});
