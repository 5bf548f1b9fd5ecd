/**
 * @temppass/web — the browser SDK of temppass (SPEC.md §11).
 *
 * Owns what a web page needs to give a viewer temporary access over
 * Adobe Pass REST API V2: dynamic client registration from a software
 * statement (client and access token cached in storage, renewed on a 401),
 * a stable random device id, typed calls for configuration, profiles,
 * authorize and preauthorize with the enhanced errors of SPEC.md §5, the
 * picker helpers, the periodic re-check (`watch`) and the promotional
 * identity hash. No runtime dependencies: `fetch`, WebCrypto and storage only.
 */

// ---------------------------------------------------------------------------
// Wire shapes (field names as Adobe's OpenAPI files)
// ---------------------------------------------------------------------------

/** An MVPD of the configuration: a regular one (`isTempPass: false`) or a TempPass MVPD. */
export interface Mvpd {
  id: string;
  displayName: string;
  logoUrl: string;
  isTempPass: boolean;
  [field: string]: unknown;
}

export interface Domain {
  name: string;
  mvpdInitiated: boolean;
}

/** `GET /api/v2/{serviceProvider}/configuration`. */
export interface Configuration {
  requestor: {
    id: string;
    name: string;
    domains: Domain[];
    mvpds: Mvpd[];
  };
}

export interface Attribute<T> {
  value: T;
  state: string;
}

/** A temporary profile: the viewer's trial, or the prospective one before the first authorization. */
export interface Profile {
  notBefore: number;
  notAfter: number;
  issuer: string;
  type: string;
  attributes: {
    expiration_date?: Attribute<number>;
    /** Promotional rules only. */
    remaining_resources?: Attribute<number>;
    /** Promotional rules only. */
    used_assets?: Attribute<string[]>;
    userID?: Attribute<string>;
    [name: string]: Attribute<unknown> | undefined;
  };
}

export interface MediaToken {
  notBefore: number;
  notAfter: number;
  /** The media token to hand to the playback back end, as is. */
  serializedToken: string;
}

/** An enhanced error (SPEC.md §5): a request-level error body, or a decision item's `error`. */
export interface EnhancedError {
  status: number;
  code: string;
  message: string;
  action: string;
  helpUrl?: string;
  trace?: string;
  details?: string;
}

interface DecisionFields {
  resource: string;
  serviceProvider: string;
  mvpd: string;
  source: string;
}

/** A permitted resource. Authorize permits carry the trial's end (`notAfter`) and a media token; preauthorize permits carry neither. */
export interface Permit extends DecisionFields {
  authorized: true;
  notBefore?: number;
  notAfter?: number;
  token?: MediaToken;
}

/** A denied resource, with its item-level error, e.g. `temporary_access_duration_limit_exceeded`. */
export interface Deny extends DecisionFields {
  authorized: false;
  error: EnhancedError;
}

export type Decision = Permit | Deny;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Codes meaning the viewer's temporary access is used up (SPEC.md §5, action `authentication`). */
const TRIAL_OVER_CODES: readonly string[] = [
  "temporary_access_duration_limit_exceeded",
  "temporary_access_resources_limit_exceeded",
];

/**
 * A request that failed as a whole: an enhanced error of the API (SPEC.md §5),
 * an OAuth error of registration (`code` is the OAuth `error`), or a network
 * failure (`status` 0, `code` `network_error`, `action` `retry`).
 */
export class TempPassError extends Error implements EnhancedError {
  readonly status: number;
  readonly code: string;
  readonly action: string;
  readonly helpUrl?: string;
  readonly trace?: string;
  readonly details?: string;

  constructor(error: EnhancedError) {
    super(error.message);
    this.name = "TempPassError";
    this.status = error.status;
    this.code = error.code;
    this.action = error.action;
    if (error.helpUrl !== undefined) this.helpUrl = error.helpUrl;
    if (error.trace !== undefined) this.trace = error.trace;
    if (error.details !== undefined) this.details = error.details;
  }

  /** The viewer's temporary access has ended or has no title left: a 403 profile, "please log in with your cable provider". */
  get trialOver(): boolean {
    return isTrialOver(this);
  }
}

/** True for an enhanced error (request-level or a decision's) that means the trial is used up. */
export function isTrialOver(error: EnhancedError | undefined | null): boolean {
  return error != null && TRIAL_OVER_CODES.includes(error.code);
}

// ---------------------------------------------------------------------------
// Storage and options
// ---------------------------------------------------------------------------

/** The part of the Web Storage API the SDK uses; `localStorage` fits. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A storage that lives as long as the page (or a test): for environments without `localStorage`. */
export function memoryStorage(): StorageLike {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, String(value)),
    removeItem: (key) => void items.delete(key),
  };
}

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface TempPassOptions {
  /** Where temppass answers, e.g. `https://temppass.example.com` (no trailing path). */
  baseUrl: string;
  /** The service provider (requestor) id, e.g. `REF30`. */
  serviceProvider: string;
  /** The software statement printed by `temppass app create … --scope api:client:v2`. */
  softwareStatement: string;
  /** Where the device id, client and access token are kept. Default: `localStorage`. */
  storage?: StorageLike;
  /** Default: the global `fetch`. */
  fetch?: FetchLike;
  /** Prefix of the storage keys. Default: `temppass`. */
  storageKeyPrefix?: string;
}

/** Options of calls that may need the promotional identity. */
export interface IdentityOptions {
  /** The `AP-TempPass-Identity` header value, from {@link identityHeader}. Needed on promotional profiles and authorizations. */
  identity?: string;
}

export interface WatchOptions extends IdentityOptions {
  /** Called exactly once, when the trial has ended or has no title left for this resource — then the watch stops. */
  onExpire: (expiry: Expiry) => void;
  /** Called with every permit, e.g. to hand the fresh media token to the player. */
  onPermit?: (permit: Permit) => void;
  /**
   * Called when a re-check fails as a whole (network, 5xx), and the watch keeps
   * going; or with the denying decision when the server refuses for another
   * reason than the trial's end (e.g. a missing identity), and the watch stops.
   */
  onError?: (error: unknown) => void;
  /** Longest time between two re-checks. Default: 60 000 ms. */
  intervalMs?: number;
}

/** Why a watch ended. */
export interface Expiry {
  /** The denying decision (e.g. `temporary_access_duration_limit_exceeded`). */
  decision: Deny;
}

/** A running re-check; `stop()` cancels it (e.g. when the player stops). */
export interface Watch {
  stop(): void;
  /** True once `onExpire` was called. */
  readonly expired: boolean;
}

/** What {@link TempPassClient.chooseTempPass} found: the MVPD to use and its (valid or prospective) profile. */
export interface TempPassChoice {
  mvpd: string;
  profile: Profile;
}

interface RegisteredClient {
  softwareStatement: string;
  clientId: string;
  clientSecret: string;
}

interface CachedToken {
  accessToken: string;
  /** Local clock; only used to renew early, a 401 renews anyway. */
  expiresAtMs: number;
}

/** A token is renewed this long before its announced expiry. */
const TOKEN_RENEW_MARGIN_MS = 60_000;
/** Shortest delay between two re-checks of a watch. */
const MIN_RECHECK_DELAY_MS = 200;
const DEFAULT_RECHECK_INTERVAL_MS = 60_000;

// ---------------------------------------------------------------------------
// Free functions
// ---------------------------------------------------------------------------

function mvpdList(mvpds: Configuration | readonly Mvpd[]): readonly Mvpd[] {
  return "requestor" in mvpds ? mvpds.requestor.mvpds : mvpds;
}

/** The MVPDs for the picker: the regular ones, without TempPass MVPDs. */
export function regularMvpds(mvpds: Configuration | readonly Mvpd[]): Mvpd[] {
  return mvpdList(mvpds).filter((mvpd) => !mvpd.isTempPass);
}

/** The TempPass MVPDs, in configuration order. */
export function tempPassMvpds(mvpds: Configuration | readonly Mvpd[]): Mvpd[] {
  return mvpdList(mvpds).filter((mvpd) => mvpd.isTempPass);
}

function cryptoApi(): Crypto {
  const api = globalThis.crypto;
  if (api === undefined) throw new Error("temppass: WebCrypto (globalThis.crypto) is not available");
  return api;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function base64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  return btoa(Array.from(bytes, (byte) => String.fromCharCode(byte)).join(""));
}

/**
 * The identity hash of an e-mail address: lower-case hex SHA-256 of the
 * trimmed, lower-cased address, computed in the browser so the address never
 * leaves the page. WebCrypto needs a secure context (https, or localhost).
 */
export async function hashIdentity(email: string): Promise<string> {
  const subtle = cryptoApi().subtle;
  if (subtle === undefined) throw new Error("temppass: crypto.subtle needs a secure context (https or localhost)");
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(email.trim().toLowerCase()));
  return hex(new Uint8Array(digest));
}

/**
 * The `AP-TempPass-Identity` header value for an e-mail address:
 * base64 of `{"<key>":"<hashIdentity(email)>"}`. `key` is the rule's `identity_key`.
 */
export async function identityHeader(email: string, key = "email"): Promise<string> {
  return base64(JSON.stringify({ [key]: await hashIdentity(email) }));
}

/** A new random device id: 128 bits, hex. */
function newDeviceId(): string {
  return hex(cryptoApi().getRandomValues(new Uint8Array(16)));
}

function asEnhancedError(body: unknown, status: number): EnhancedError | undefined {
  if (typeof body !== "object" || body === null) return undefined;
  const fields = body as Record<string, unknown>;
  if (typeof fields.code !== "string") return undefined;
  const error: EnhancedError = {
    status: typeof fields.status === "number" ? fields.status : status,
    code: fields.code,
    message: typeof fields.message === "string" ? fields.message : fields.code,
    action: typeof fields.action === "string" ? fields.action : "none",
  };
  if (typeof fields.helpUrl === "string") error.helpUrl = fields.helpUrl;
  if (typeof fields.trace === "string") error.trace = fields.trace;
  if (typeof fields.details === "string") error.details = fields.details;
  return error;
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** The error of a failed response: an enhanced error body, an OAuth error body, or the bare status. */
async function errorOf(response: Response): Promise<TempPassError> {
  const body = await readJson(response);
  const enhanced = asEnhancedError(body, response.status);
  if (enhanced !== undefined) return new TempPassError(enhanced);
  if (typeof body === "object" && body !== null && typeof (body as { error?: unknown }).error === "string") {
    const oauth = body as { error: string; error_description?: unknown };
    return new TempPassError({
      status: response.status,
      code: oauth.error,
      message: typeof oauth.error_description === "string" ? oauth.error_description : oauth.error,
      action: "application-registration",
    });
  }
  return new TempPassError({
    status: response.status,
    code: "unexpected_response",
    message: `unexpected HTTP ${response.status} from temppass`,
    action: response.status >= 500 ? "retry" : "none",
  });
}

/** Registration errors after which the cached client is useless and a new one is registered. */
const STALE_CLIENT_CODES: readonly string[] = ["invalid_client", "unauthorized_client"];

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/** Creates a {@link TempPassClient}. */
export function createClient(options: TempPassOptions): TempPassClient {
  return new TempPassClient(options);
}

/**
 * One service provider's API on one temppass server, for this browser.
 * Registration and the access token are lazy: the first call does them.
 */
export class TempPassClient {
  readonly baseUrl: string;
  readonly serviceProvider: string;
  private readonly softwareStatement: string;
  private readonly storage: StorageLike;
  private readonly fetchFn: FetchLike;
  private readonly keyPrefix: string;
  /** Concurrent calls share one registration and one token request. */
  private pendingToken: Promise<string> | undefined;

  constructor(options: TempPassOptions) {
    if (!options.baseUrl) throw new Error("temppass: options.baseUrl is required");
    if (!options.serviceProvider) throw new Error("temppass: options.serviceProvider is required");
    if (!options.softwareStatement) throw new Error("temppass: options.softwareStatement is required");
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.serviceProvider = options.serviceProvider;
    this.softwareStatement = options.softwareStatement;
    const storage = options.storage ?? (globalThis as { localStorage?: StorageLike }).localStorage;
    if (storage === undefined) throw new Error("temppass: no localStorage here; pass options.storage");
    this.storage = storage;
    const globalFetch = globalThis.fetch;
    // Called through a closure: a detached `window.fetch` throws "Illegal invocation".
    this.fetchFn = options.fetch ?? ((url, init) => globalFetch(url, init));
    this.keyPrefix = options.storageKeyPrefix ?? "temppass";
  }

  // --- identity of this browser ---

  /** This browser's device id: random, created once, kept in storage (SPEC.md §4 `AP-Device-Identifier`). */
  get deviceId(): string {
    const key = `${this.keyPrefix}:device`;
    let deviceId = this.storage.getItem(key);
    if (deviceId === null || deviceId === "") {
      deviceId = newDeviceId();
      this.storage.setItem(key, deviceId);
    }
    return deviceId;
  }

  // --- REST API V2 ---

  /** The service provider's configuration: regular and TempPass MVPDs. */
  async configuration(): Promise<Configuration> {
    return (await this.api("GET", "configuration")) as Configuration;
  }

  /**
   * The temporary profile of `mvpd` for this device: the trial while it is
   * valid, or the prospective profile before the first authorization (reading
   * it starts nothing). `null` for a regular MVPD. A used-up trial throws a
   * {@link TempPassError} with `status` 403 and `trialOver` true.
   */
  async profile(mvpd: string, options: IdentityOptions = {}): Promise<Profile | null> {
    const body = (await this.api("GET", `profiles/${encodeURIComponent(mvpd)}`, options)) as {
      profiles?: Record<string, Profile>;
    };
    return body.profiles?.[mvpd] ?? null;
  }

  /**
   * Authorizes one resource: the first authorization starts the trial. A
   * permit carries the media token and the trial's end (`notAfter`); a deny
   * carries its item-level error (e.g. `temporary_access_duration_limit_exceeded`).
   */
  async authorize(mvpd: string, resource: string, options: IdentityOptions = {}): Promise<Decision> {
    const [decision] = await this.decisions("authorize", mvpd, [resource], options);
    if (decision === undefined) throw unexpected("authorize answered no decision");
    return decision;
  }

  /** Would these resources (at most 5) be permitted now? Starts no trial and uses no title. */
  async preauthorize(mvpd: string, resources: readonly string[], options: IdentityOptions = {}): Promise<Decision[]> {
    return this.decisions("preauthorize", mvpd, resources, options);
  }

  // --- TempPass helpers ---

  /**
   * The first TempPass MVPD (in the given order) whose profile is valid or
   * prospective; `null` when every one is used up. Given a configuration, all
   * its TempPass MVPDs are tried; given ids or MVPDs, those (the chain
   * "4 hours once, then 10 minutes a day" is `["TempPassEvent", "TempPassDaily"]`).
   */
  async chooseTempPass(
    mvpds: Configuration | readonly (Mvpd | string)[],
    options: IdentityOptions = {},
  ): Promise<TempPassChoice | null> {
    const ids =
      "requestor" in mvpds
        ? tempPassMvpds(mvpds).map((mvpd) => mvpd.id)
        : mvpds.filter((mvpd) => typeof mvpd === "string" || mvpd.isTempPass).map((mvpd) => (typeof mvpd === "string" ? mvpd : mvpd.id));
    for (const mvpd of ids) {
      try {
        const profile = await this.profile(mvpd, options);
        if (profile !== null) return { mvpd, profile };
      } catch (error) {
        if (error instanceof TempPassError && error.trialOver) continue;
        throw error;
      }
    }
    return null;
  }

  /**
   * Re-authorizes `resource` on a timer, because nothing stops a stream that
   * is already playing. The next check comes after `intervalMs`, or sooner
   * when the media token or the trial would end first, so the check at the
   * trial's end is denied by the server and `onExpire` fires exactly once.
   * The first check runs at once.
   */
  watch(mvpd: string, resource: string, options: WatchOptions): Watch {
    const intervalMs = Math.max(options.intervalMs ?? DEFAULT_RECHECK_INTERVAL_MS, MIN_RECHECK_DELAY_MS);
    const identity: IdentityOptions = options.identity === undefined ? {} : { identity: options.identity };
    let stopped = false;
    let expired = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const schedule = (delayMs: number): void => {
      if (!stopped) timer = setTimeout(() => void check(), Math.max(delayMs, MIN_RECHECK_DELAY_MS));
    };
    const check = async (): Promise<void> => {
      timer = undefined;
      let decision: Decision;
      try {
        decision = await this.authorize(mvpd, resource, identity);
      } catch (error) {
        if (stopped) return;
        options.onError?.(error);
        schedule(intervalMs);
        return;
      }
      if (stopped) return;
      if (!decision.authorized) {
        stopped = true;
        if (isTrialOver(decision.error)) {
          expired = true;
          options.onExpire({ decision });
        } else {
          // Not the trial's end: a request the server will refuse again (identity, limits, MVPD).
          options.onError?.(decision);
        }
        return;
      }
      // Durations measured on the server's clock (notBefore is the server's now), never the browser's.
      const trialLeftMs =
        decision.notAfter !== undefined && decision.notBefore !== undefined
          ? decision.notAfter - decision.notBefore
          : Infinity;
      const tokenLeftMs = decision.token ? decision.token.notAfter - decision.token.notBefore : Infinity;
      schedule(Math.min(intervalMs, trialLeftMs, tokenLeftMs));
      options.onPermit?.(decision);
    };
    timer = setTimeout(() => void check(), 0);
    return {
      stop: () => {
        stopped = true;
        if (timer !== undefined) clearTimeout(timer);
        timer = undefined;
      },
      get expired() {
        return expired;
      },
    };
  }

  // --- plumbing ---

  private async decisions(
    kind: "authorize" | "preauthorize",
    mvpd: string,
    resources: readonly string[],
    options: IdentityOptions,
  ): Promise<Decision[]> {
    const body = (await this.api("POST", `decisions/${kind}/${encodeURIComponent(mvpd)}`, options, {
      resources,
    })) as { decisions?: Decision[] };
    if (!Array.isArray(body.decisions)) throw unexpected(`${kind} answered no decisions`);
    return body.decisions;
  }

  /** One `/api/v2/{serviceProvider}/…` call; on a 401 the token is renewed and the call made once more. */
  private async api(method: "GET" | "POST", path: string, options: IdentityOptions = {}, json?: unknown): Promise<unknown> {
    const url = `${this.baseUrl}/api/v2/${encodeURIComponent(this.serviceProvider)}/${path}`;
    const headers: Record<string, string> = {
      Accept: "application/json",
      "AP-Device-Identifier": `fingerprint ${base64(this.deviceId)}`,
    };
    if (options.identity !== undefined) headers["AP-TempPass-Identity"] = options.identity;
    if (json !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      const token = await this.accessToken(attempt > 0);
      const init: RequestInit = { method, headers: { ...headers, Authorization: `Bearer ${token}` } };
      if (json !== undefined) init.body = JSON.stringify(json);
      const response = await this.send(url, init);
      if (response.status === 401 && attempt === 0) {
        await response.body?.cancel();
        this.storage.removeItem(this.tokenKey());
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      return readJson(response);
    }
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchFn(url, init);
    } catch (error) {
      throw new TempPassError({
        status: 0,
        code: "network_error",
        message: `temppass is unreachable: ${error instanceof Error ? error.message : String(error)}`,
        action: "retry",
      });
    }
  }

  private tokenKey(): string {
    return `${this.keyPrefix}:${this.baseUrl}:${this.serviceProvider}:token`;
  }

  private clientKey(): string {
    return `${this.keyPrefix}:${this.baseUrl}:${this.serviceProvider}:client`;
  }

  /** A cached access token, or a new one (`renew`: the cached one was refused). */
  private accessToken(renew: boolean): Promise<string> {
    if (!renew) {
      const cached = readStored<CachedToken>(this.storage, this.tokenKey());
      if (cached !== undefined && cached.expiresAtMs - TOKEN_RENEW_MARGIN_MS > Date.now()) {
        return Promise.resolve(cached.accessToken);
      }
    }
    this.pendingToken ??= this.newAccessToken().finally(() => {
      this.pendingToken = undefined;
    });
    return this.pendingToken;
  }

  private async newAccessToken(): Promise<string> {
    let client = await this.registeredClient(false);
    let answer: { access_token: string; expires_in?: number };
    try {
      answer = await this.requestToken(client);
    } catch (error) {
      // The server forgot or revoked the client (e.g. a fresh database): register again, once.
      if (!(error instanceof TempPassError && STALE_CLIENT_CODES.includes(error.code))) throw error;
      client = await this.registeredClient(true);
      answer = await this.requestToken(client);
    }
    const token: CachedToken = {
      accessToken: answer.access_token,
      expiresAtMs: Date.now() + (answer.expires_in ?? 3600) * 1000,
    };
    this.storage.setItem(this.tokenKey(), JSON.stringify(token));
    return token.accessToken;
  }

  private async requestToken(client: RegisteredClient): Promise<{ access_token: string; expires_in?: number }> {
    const form = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: client.clientId,
      client_secret: client.clientSecret,
    });
    const response = await this.send(`${this.baseUrl}/o/client/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: form.toString(),
    });
    if (!response.ok) throw await errorOf(response);
    const body = (await readJson(response)) as { access_token?: unknown; expires_in?: unknown } | undefined;
    if (typeof body?.access_token !== "string") throw unexpected("the token endpoint answered no access_token");
    return typeof body.expires_in === "number"
      ? { access_token: body.access_token, expires_in: body.expires_in }
      : { access_token: body.access_token };
  }

  /** The cached client of this software statement, or a newly registered one. */
  private async registeredClient(renew: boolean): Promise<RegisteredClient> {
    const cached = readStored<RegisteredClient>(this.storage, this.clientKey());
    if (!renew && cached !== undefined && cached.softwareStatement === this.softwareStatement) return cached;
    this.storage.removeItem(this.tokenKey());
    const response = await this.send(`${this.baseUrl}/o/client/register`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ software_statement: this.softwareStatement }),
    });
    if (!response.ok) throw await errorOf(response);
    const body = (await readJson(response)) as { client_id?: unknown; client_secret?: unknown } | undefined;
    if (typeof body?.client_id !== "string" || typeof body.client_secret !== "string") {
      throw unexpected("registration answered no client_id/client_secret");
    }
    const client: RegisteredClient = {
      softwareStatement: this.softwareStatement,
      clientId: body.client_id,
      clientSecret: body.client_secret,
    };
    this.storage.setItem(this.clientKey(), JSON.stringify(client));
    return client;
  }
}

function readStored<T>(storage: StorageLike, key: string): T | undefined {
  const raw = storage.getItem(key);
  if (raw === null) return undefined;
  try {
    return JSON.parse(raw) as T;
  } catch {
    storage.removeItem(key);
    return undefined;
  }
}

function unexpected(message: string): TempPassError {
  return new TempPassError({ status: 0, code: "unexpected_response", message, action: "none" });
}
