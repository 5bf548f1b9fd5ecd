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
/**
 * A request that failed as a whole: an enhanced error of the API (SPEC.md §5),
 * an OAuth error of registration (`code` is the OAuth `error`), or a network
 * failure (`status` 0, `code` `network_error`, `action` `retry`).
 */
export declare class TempPassError extends Error implements EnhancedError {
    readonly status: number;
    readonly code: string;
    readonly action: string;
    readonly helpUrl?: string;
    readonly trace?: string;
    readonly details?: string;
    constructor(error: EnhancedError);
    /** The viewer's temporary access has ended or has no title left: a 403 profile, "please log in with your cable provider". */
    get trialOver(): boolean;
}
/** True for an enhanced error (request-level or a decision's) that means the trial is used up. */
export declare function isTrialOver(error: EnhancedError | undefined | null): boolean;
/** The part of the Web Storage API the SDK uses; `localStorage` fits. */
export interface StorageLike {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    removeItem(key: string): void;
}
/** A storage that lives as long as the page (or a test): for environments without `localStorage`. */
export declare function memoryStorage(): StorageLike;
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
/** The MVPDs for the picker: the regular ones, without TempPass MVPDs. */
export declare function regularMvpds(mvpds: Configuration | readonly Mvpd[]): Mvpd[];
/** The TempPass MVPDs, in configuration order. */
export declare function tempPassMvpds(mvpds: Configuration | readonly Mvpd[]): Mvpd[];
/**
 * The identity hash of an e-mail address: lower-case hex SHA-256 of the
 * trimmed, lower-cased address, computed in the browser so the address never
 * leaves the page. WebCrypto needs a secure context (https, or localhost).
 */
export declare function hashIdentity(email: string): Promise<string>;
/**
 * The `AP-TempPass-Identity` header value for an e-mail address:
 * base64 of `{"<key>":"<hashIdentity(email)>"}`. `key` is the rule's `identity_key`.
 */
export declare function identityHeader(email: string, key?: string): Promise<string>;
/** Creates a {@link TempPassClient}. */
export declare function createClient(options: TempPassOptions): TempPassClient;
/**
 * One service provider's API on one temppass server, for this browser.
 * Registration and the access token are lazy: the first call does them.
 */
export declare class TempPassClient {
    readonly baseUrl: string;
    readonly serviceProvider: string;
    private readonly softwareStatement;
    private readonly storage;
    private readonly fetchFn;
    private readonly keyPrefix;
    /** Concurrent calls share one registration and one token request. */
    private pendingToken;
    constructor(options: TempPassOptions);
    /** This browser's device id: random, created once, kept in storage (SPEC.md §4 `AP-Device-Identifier`). */
    get deviceId(): string;
    /** The service provider's configuration: regular and TempPass MVPDs. */
    configuration(): Promise<Configuration>;
    /**
     * The temporary profile of `mvpd` for this device: the trial while it is
     * valid, or the prospective profile before the first authorization (reading
     * it starts nothing). `null` for a regular MVPD. A used-up trial throws a
     * {@link TempPassError} with `status` 403 and `trialOver` true.
     */
    profile(mvpd: string, options?: IdentityOptions): Promise<Profile | null>;
    /**
     * Authorizes one resource: the first authorization starts the trial. A
     * permit carries the media token and the trial's end (`notAfter`); a deny
     * carries its item-level error (e.g. `temporary_access_duration_limit_exceeded`).
     */
    authorize(mvpd: string, resource: string, options?: IdentityOptions): Promise<Decision>;
    /** Would these resources (at most 5) be permitted now? Starts no trial and uses no title. */
    preauthorize(mvpd: string, resources: readonly string[], options?: IdentityOptions): Promise<Decision[]>;
    /**
     * The first TempPass MVPD (in the given order) whose profile is valid or
     * prospective; `null` when every one is used up. Given a configuration, all
     * its TempPass MVPDs are tried; given ids or MVPDs, those (the chain
     * "4 hours once, then 10 minutes a day" is `["TempPassEvent", "TempPassDaily"]`).
     */
    chooseTempPass(mvpds: Configuration | readonly (Mvpd | string)[], options?: IdentityOptions): Promise<TempPassChoice | null>;
    /**
     * Re-authorizes `resource` on a timer, because nothing stops a stream that
     * is already playing. The next check comes after `intervalMs`, or sooner
     * when the media token or the trial would end first, so the check at the
     * trial's end is denied by the server and `onExpire` fires exactly once.
     * The first check runs at once.
     */
    watch(mvpd: string, resource: string, options: WatchOptions): Watch;
    private decisions;
    /** One `/api/v2/{serviceProvider}/…` call; on a 401 the token is renewed and the call made once more. */
    private api;
    private send;
    private tokenKey;
    private clientKey;
    /** A cached access token, or a new one (`renew`: the cached one was refused). */
    private accessToken;
    private newAccessToken;
    private requestToken;
    /** The cached client of this software statement, or a newly registered one. */
    private registeredClient;
}
export {};
