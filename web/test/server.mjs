// Starts a real `temppass serve` for the tests: the binary from the workspace,
// a configuration with short TTLs in a temporary directory, port 0.
//
// TEMPPASS_BIN=path/to/temppass skips the cargo build (e.g. a CI step that built it already).

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** How long a server may take to print its address. */
const START_TIMEOUT_MS = 30_000;
/** `cargo build` waits for other builds sharing the lock; a cold build of the binary takes minutes. */
const BUILD_TIMEOUT_MS = 20 * 60_000;

let binary;

/** The `temppass` binary, built (or found up to date) by cargo once per test process. */
export async function temppassBinary() {
  if (process.env.TEMPPASS_BIN) return process.env.TEMPPASS_BIN;
  binary ??= new Promise((resolve, reject) => {
    execFile(
      "cargo",
      ["build", "-q", "-p", "temppass", "--bin", "temppass", "--message-format=json-render-diagnostics"],
      { cwd: repoRoot, maxBuffer: 64 * 1024 * 1024, timeout: BUILD_TIMEOUT_MS },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`cargo build -p temppass failed: ${error.message}\n${stderr}`));
        const executable = stdout
          .split("\n")
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line))
          .find((message) => message.reason === "compiler-artifact" && message.target?.name === "temppass" && message.executable)
          ?.executable;
        if (!executable) return reject(new Error("cargo build did not report the temppass executable"));
        resolve(executable);
      },
    );
  });
  return binary;
}

/**
 * The test configuration: service provider REF30 with short TTLs, and OTHER
 * (for a token of the wrong service provider). `ttls` overrides the rules' TTLs.
 */
export function testConfig({ demo = false, ttls = {}, mediaTokenTtl = "7m" } = {}) {
  const ttl = { TempPass: "3s", TempPassEvent: "3s", TempPassDaily: "3s", flexibleTempPass: "1h", ...ttls };
  return `
[server]
listen = "127.0.0.1:0"
management_listen = "127.0.0.1:0"

[storage]
url = "sqlite://temppass.db"

[demo]
enabled = ${demo}

[tokens]
media_token_ttl = "${mediaTokenTtl}"
access_token_ttl = "1h"

[[service_providers]]
id = "REF30"
name = "Reference channel"
domains = ["example.com"]
mvpds = [{ id = "Cablevision", display_name = "Cablevision" }, { id = "Comcast_SSO", display_name = "Xfinity" }]

[[service_providers.temppass]]
mvpd = "TempPass"
display_name = "Free preview"
kind = "basic"
ttl = "${ttl.TempPass}"

[[service_providers.temppass]]
mvpd = "flexibleTempPass"
display_name = "Three free titles"
kind = "promotional"
ttl = "${ttl.flexibleTempPass}"
max_resources = 3
identity_key = "email"

[[service_providers.temppass]]
mvpd = "TempPassEvent"
display_name = "Four hours of the big event"
kind = "basic"
ttl = "${ttl.TempPassEvent}"

[[service_providers.temppass]]
mvpd = "TempPassDaily"
display_name = "Ten minutes a day"
kind = "basic"
ttl = "${ttl.TempPassDaily}"
reset = { daily_at = "00:00", timezone = "America/New_York" }

[[service_providers]]
id = "OTHER"
name = "Another channel"
domains = ["other.example"]

[[service_providers.temppass]]
mvpd = "TempPass"
kind = "basic"
ttl = "1h"
`;
}

function run(bin, args, cwd) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { cwd, timeout: 60_000, env: { ...process.env, RUST_LOG: "warn" } }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`temppass ${args.join(" ")} failed: ${error.message}\n${stderr}`));
      resolve(stdout);
    });
  });
}

/** A running server: `baseUrl`, `createApp(...)`, `revokeApp(name)`, `stop()`. */
export async function startServer(options = {}) {
  const bin = await temppassBinary();
  const dir = mkdtempSync(join(tmpdir(), "temppass-web-test-"));
  const configPath = join(dir, "temppass.toml");
  writeFileSync(configPath, testConfig(options));
  const child = spawn(bin, ["serve", "--config", configPath], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  // A test process that dies early (a closed pipe, Ctrl-C) takes its server along.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const baseUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("temppass serve printed no address in time")), START_TIMEOUT_MS);
    child.once("exit", (code) => reject(new Error(`temppass serve exited with ${code}`)));
    // Log lines may come first (tracing writes to stdout too): wait for the address.
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const match = /^temppass listening on (http:\/\/\S+)$/.exec(line.trim());
      if (!match) return;
      clearTimeout(timer);
      resolve(match[1]);
    });
  });
  return {
    baseUrl,
    dir,
    /** Creates an application and returns its software statement (the last line of stdout). */
    async createApp(name, { serviceProvider = "REF30", scope = "api:client:v2" } = {}) {
      const stdout = await run(bin, ["app", "create", "--config", configPath, "--name", name, "--service-provider", serviceProvider, "--scope", scope], dir);
      return stdout.trim().split("\n").pop();
    },
    async revokeApp(name) {
      await run(bin, ["app", "revoke", "--config", configPath, name], dir);
    },
    async stop() {
      process.off("exit", killOnExit);
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
