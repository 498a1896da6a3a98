/**
 * Runs a real registry 2.8.2 (Debian `docker-registry`) on 127.0.0.1 for tests: anonymous, htpasswd (Basic) or
 * token (Bearer) auth, optionally with the `redirect` storage middleware (blob GET/HEAD answer 307 to a CDN) or as a
 * pull-through cache. Config shapes follow registry-pull-rules.md §5.1.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { get as httpsGet } from "node:https";
import { join } from "node:path";
import { hashSync } from "bcryptjs";
import { freePort } from "./ports.js";
import { makeTempDir, removeDir } from "./tmp.js";
import type { TokenServer } from "./token-server.js";

export const REGISTRY_BINARY = process.env.LLAMA_OCI_TEST_REGISTRY ?? "/usr/bin/docker-registry";

export interface RegistryHandle {
  /** http://127.0.0.1:PORT (https:// with the tls option) */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  /** Storage root: blobs live under docker/registry/v2/blobs/sha256/<2hex>/<hex>/data. */
  rootDir: string;
  /** What the registry printed so far (stdout and stderr), for debugging failures. */
  logs(): string;
  stop(): Promise<void>;
}

export interface RegistryOptions {
  auth?: { kind: "htpasswd"; users: Record<string, string> } | { kind: "token"; tokenServer: TokenServer };
  /** Base URL of a CDN; enables the `redirect` storage middleware. */
  redirectTo?: string;
  /** Storage directory to reuse; it is never removed by stop(). Default: a new temp dir that stop() removes. */
  rootDir?: string;
  /** Keep the default temp rootDir on stop(), e.g. to restart a registry over the same content. */
  keepRootDir?: boolean;
  /** Pull-through cache mode (config `proxy:`). */
  proxy?: { remoteUrl: string; username?: string; password?: string };
  /**
   * Serve HTTPS with this PEM certificate and key (config http.tls); with clientCaPath, demand a client certificate
   * signed by that CA (http.tls.clientcas), and probe startup with probeClient.
   */
  tls?: { certPath: string; keyPath: string; clientCaPath?: string; probeClient?: { certPath: string; keyPath: string } };
}

const MAX_LOG_CHARS = 64 * 1024;
const STARTUP_TIMEOUT_MS = 15_000;

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of running) child.kill("SIGKILL");
  });
}

export async function startRegistry(options: RegistryOptions = {}): Promise<RegistryHandle> {
  const configDir = await makeTempDir("llama-oci-registry-config");
  const ownsRootDir = options.rootDir === undefined;
  const rootDir = options.rootDir ?? (await makeTempDir("llama-oci-registry-data"));
  try {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const configPath = join(configDir, "config.yml");
      await writeFile(configPath, JSON.stringify(await registryConfig(options, rootDir, configDir, port), null, 2));
      try {
        return await launch(configPath, port, rootDir, options.tls, async () => {
          await removeDir(configDir);
          if (ownsRootDir && !options.keepRootDir) await removeDir(rootDir);
        });
      } catch (error) {
        // Another process may have taken the port between freePort() and the registry's bind.
        if (attempt < 3 && error instanceof Error && /address already in use/.test(error.message)) continue;
        throw error;
      }
    }
  } catch (error) {
    await removeDir(configDir);
    if (ownsRootDir) await removeDir(rootDir);
    throw error;
  }
}

/** The config as JSON, which is valid YAML and spares us quoting paths. */
async function registryConfig(options: RegistryOptions, rootDir: string, configDir: string, port: number): Promise<object> {
  const config: Record<string, unknown> = {
    version: "0.1",
    log: { level: "warn", accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: rootDir },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${port}`, secret: "test-only" },
  };
  if (options.tls !== undefined) {
    (config.http as Record<string, unknown>).tls = {
      certificate: options.tls.certPath,
      key: options.tls.keyPath,
      ...(options.tls.clientCaPath ? { clientcas: [options.tls.clientCaPath] } : {}),
    };
  }
  if (options.redirectTo !== undefined) {
    config.middleware = { storage: [{ name: "redirect", options: { baseurl: options.redirectTo } }] };
  }
  if (options.auth?.kind === "htpasswd") {
    const htpasswdPath = join(configDir, "htpasswd");
    const lines = Object.entries(options.auth.users).map(([user, password]) => `${user}:${hashSync(password, 4)}`);
    await writeFile(htpasswdPath, `${lines.join("\n")}\n`);
    config.auth = { htpasswd: { realm: "test-basic-realm", path: htpasswdPath } };
  } else if (options.auth?.kind === "token") {
    const { tokenServer } = options.auth;
    config.auth = {
      token: { realm: tokenServer.realm, service: tokenServer.service, issuer: tokenServer.issuer, rootcertbundle: tokenServer.certPath },
    };
  }
  if (options.proxy !== undefined) {
    const proxy: Record<string, string> = { remoteurl: options.proxy.remoteUrl };
    if (options.proxy.username !== undefined) proxy.username = options.proxy.username;
    if (options.proxy.password !== undefined) proxy.password = options.proxy.password;
    config.proxy = proxy;
  }
  return config;
}

async function launch(
  configPath: string,
  port: number,
  rootDir: string,
  tls: RegistryOptions["tls"],
  cleanup: () => Promise<void>,
): Promise<RegistryHandle> {
  const ca = tls ? await readFile(tls.certPath) : undefined;
  const client = tls?.probeClient ? { cert: await readFile(tls.probeClient.certPath), key: await readFile(tls.probeClient.keyPath) } : undefined;
  installExitHook();
  // setpriv --pdeathsig: the registry dies with us even when this process is SIGKILLed (no 'exit' event then).
  const command = existsSync("/usr/bin/setpriv")
    ? ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--", REGISTRY_BINARY, "serve", configPath]
    : [REGISTRY_BINARY, "serve", configPath];
  const child = spawn(command[0]!, command.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let logs = "";
  const append = (chunk: Buffer) => {
    logs += chunk.toString("utf8");
    if (logs.length > MAX_LOG_CHARS) logs = logs.slice(-MAX_LOG_CHARS);
  };
  child.stdout.on("data", append);
  child.stderr.on("data", append);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let spawnError: Error | undefined;
  child.once("error", (error) => (spawnError = error));
  void exited.then(() => running.delete(child));

  const url = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 2_000);
      await exited;
      clearTimeout(timer);
    }
    await cleanup();
  };

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    if (spawnError !== undefined || child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new Error(`registry exited during startup (${spawnError?.message ?? `code ${child.exitCode ?? "none"}`}):\n${logs}`);
    }
    const probe: Promise<ProbeResponse> = ca ? httpsStatus(`${url}/v2/`, ca, client) : fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1_000) });
    const status = await probe.then(
      async (res) => {
        await res.body?.cancel();
        return res.status;
      },
      () => 0,
    );
    if (status === 200 || status === 401) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`registry did not answer GET /v2/ within ${STARTUP_TIMEOUT_MS} ms:\n${logs}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  return { url, host: `127.0.0.1:${port}`, rootDir, logs: () => logs, stop };
}

interface ProbeResponse {
  status: number;
  body: { cancel(): Promise<void> } | null;
}

/** GET status over HTTPS trusting `ca`, shaped like fetch's response for the startup probe. */
function httpsStatus(url: string, ca: Buffer, client?: { cert: Buffer; key: Buffer }): Promise<ProbeResponse> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, { ca, ...client, timeout: 1_000 }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, body: { cancel: () => Promise.resolve(void res.destroy()) } });
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}
