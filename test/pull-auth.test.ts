// Pulls from real docker-registry instances that demand credentials (htpasswd Basic, and Bearer tokens from a real
// JWT token server), with credentials found the way a user keeps them: ~/.docker/config.json, credential helper
// programs, podman auth.json, DOCKER_AUTH_CONFIG, or the API. Everything reaches pull() through options.env.
// Every test also checks that no password, identity token or bearer token shows up in errors, warnings or the
// verbose trace.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { LlamaOciError, pull, type PullOptions, type PullResult } from "../src/index.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { startCdn, type Cdn } from "./helpers/cdn.js";
import { authField, basicHeader, makeAuthSandbox, writeJsonFile } from "./helpers/docker-config.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { digestOf, pushArtifact, type PushTarget } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";
import { startTokenServer, type RecordedTokenRequest, type TokenServer } from "./helpers/token-server.js";

const ALICE_PASSWORD = "alice-S3cret-pw-4b7e19";
const WRONG_PASSWORD = "wrong-S3cret-pw-77d0c2";
const ADMIN_PASSWORD = "admin-S3cret-pw-2a90f1";
const BASIC_PASSWORD = "basic-S3cret-pw-c81e5a";
const IDENTITY_TOKEN = "idtok-S3cret-9f3d2c71";
const SECRETS = [
  ALICE_PASSWORD,
  WRONG_PASSWORD,
  ADMIN_PASSWORD,
  BASIC_PASSWORD,
  IDENTITY_TOKEN,
  authField("alice", ALICE_PASSWORD),
  authField("alice", WRONG_PASSWORD),
  authField("alice", BASIC_PASSWORD),
  authField("<token>", IDENTITY_TOKEN),
];
/** Any compact JWS (what the token server issues) in a text means a bearer token leaked. */
const JWT = /eyJ[\w-]{8,}\.eyJ[\w-]{8,}/;

let workDir: string;
let tokenServer: TokenServer;
let basicRegistry: RegistryHandle;
let basicProxy: FaultProxy;
let tokenRegistry: RegistryHandle;
let tokenProxy: FaultProxy;
let cdnRoot: string;
let cdn: Cdn;
let cdnRegistry: RegistryHandle;
let counter = 0;

const basicModel = [fakeGguf(90_000, 101), fakeGguf(70_000, 102)];
const privateModel = [fakeGguf(60_000, 111), fakeGguf(50_000, 112), fakeGguf(40_000, 113)];
const publicModel = fakeGguf(30_000, 121);
const cdnModel = fakeGguf(200_000, 131);

const newCache = () => join(workDir, `cache-${++counter}`);
const newSandbox = () => makeAuthSandbox(join(workDir, `auth-${++counter}`));

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-pull-auth");
  cdnRoot = join(workDir, "cdn-registry-data");
  await mkdir(cdnRoot);
  tokenServer = await startTokenServer();
  tokenServer.setUser("admin", ADMIN_PASSWORD);
  tokenServer.setUser("alice", ALICE_PASSWORD);
  tokenServer.setIdentityToken(IDENTITY_TOKEN, "alice");
  tokenServer.grant("admin", "*", ["*"]);
  tokenServer.grant("alice", "private/model", ["pull"]);
  tokenServer.grant(null, "public/model", ["pull"]);
  cdn = await startCdn(cdnRoot);
  [basicRegistry, tokenRegistry, cdnRegistry] = await Promise.all([
    startRegistry({ auth: { kind: "htpasswd", users: { alice: BASIC_PASSWORD } } }),
    startRegistry({ auth: { kind: "token", tokenServer } }),
    startRegistry({ auth: { kind: "token", tokenServer }, rootDir: cdnRoot, redirectTo: cdn.url }),
  ]);
  basicProxy = await startFaultProxy(basicRegistry.url);
  tokenProxy = await startFaultProxy(tokenRegistry.url);

  const admin = { username: "admin", password: ADMIN_PASSWORD };
  const on = (registry: RegistryHandle, repository: string, auth: PushTarget["auth"]): PushTarget => ({
    registryUrl: registry.url,
    repository,
    auth,
  });
  await Promise.all([
    pushArtifact(on(basicRegistry, "team/basic-model", { username: "alice", password: BASIC_PASSWORD }), "v1", dockerV01({ ggufs: basicModel })),
    pushArtifact(on(tokenRegistry, "private/model", admin), "v1", dockerV01({ ggufs: privateModel, licenses: ["MIT"] })),
    pushArtifact(on(tokenRegistry, "public/model", admin), "v1", dockerV01({ ggufs: [publicModel] })),
    pushArtifact(on(cdnRegistry, "private/model", admin), "v1", dockerV01({ ggufs: [cdnModel], licenses: ["MIT"] })),
  ]);
}, 30_000);

afterAll(async () => {
  await basicProxy?.stop();
  await tokenProxy?.stop();
  await Promise.all([basicRegistry?.stop(), tokenRegistry?.stop(), cdnRegistry?.stop()]);
  await cdn?.stop();
  await tokenServer?.stop();
  if (workDir) await removeDir(workDir);
});

beforeEach(() => {
  tokenServer.requests.splice(0);
  Object.assign(tokenServer.options, { oauthPost: true, expiresIn: 300 });
  cdn.requests.splice(0);
  for (const proxy of [basicProxy, tokenProxy]) {
    proxy.clearFaults();
    proxy.resetStats();
  }
});

/** Warnings and the verbose trace of one pull, collected instead of printed. */
function capture(): { warnings: string[]; debug: string[]; options: Pick<PullOptions, "verbose" | "onWarning" | "onDebug"> } {
  const warnings: string[] = [];
  const debug: string[] = [];
  return {
    warnings,
    debug,
    options: { verbose: true, onWarning: (m) => warnings.push(m), onDebug: (m) => debug.push(m) },
  };
}

async function pullError(reference: string, options: PullOptions): Promise<LlamaOciError> {
  const error = await pull(reference, options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LlamaOciError);
  return error as LlamaOciError;
}

/** Everything a user could see: the trace, the warnings, and the whole error (message, hint, causes, stack). */
function expectNoSecrets(log: { warnings: string[]; debug: string[] }, error?: unknown, extraSecrets: string[] = []): void {
  const texts = [...log.warnings, ...log.debug];
  if (error !== undefined) {
    texts.push(inspect(error, { depth: 10 }));
    if (error instanceof LlamaOciError) texts.push(error.message, error.hint ?? "");
  }
  expect(texts.length).toBeGreaterThan(0);
  for (const text of texts) {
    for (const secret of [...SECRETS, ...extraSecrets]) expect(text).not.toContain(secret);
    expect(text).not.toMatch(JWT);
  }
}

async function expectFiles(result: PullResult, ggufs: Buffer[]): Promise<void> {
  const pulled = result.files.filter((f) => f.kind === "gguf");
  expect(pulled).toHaveLength(ggufs.length);
  for (const [i, data] of ggufs.entries()) expect((await readFile(pulled[i]!.path)).equals(data)).toBe(true);
}

/** Records the Authorization header of every request that reaches the proxy (a fault that never fires). */
function spyAuthorization(proxy: FaultProxy): { method: string; path: string; authorization?: string }[] {
  const seen: { method: string; path: string; authorization?: string }[] = [];
  proxy.addFault({
    kind: "status",
    status: 503,
    times: Number.MAX_SAFE_INTEGER,
    match: (req) => {
      const authorization = req.headers.authorization;
      seen.push({ method: req.method, path: req.path, ...(typeof authorization === "string" ? { authorization } : {}) });
      return false;
    },
  });
  return seen;
}

const PRIVATE_SCOPE = "repository:private/model:pull";
const PUBLIC_SCOPE = "repository:public/model:pull";
const aliceBasic = () => basicHeader("alice", ALICE_PASSWORD);
const scopesOf = (requests: RecordedTokenRequest[]) => requests.map((r) => r.query.scope ?? r.form?.scope);

describe("htpasswd (Basic) registry", () => {
  test("config.json auths with base64 auth: files are byte-identical and every registry request carried Basic", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [basicProxy.host]: { auth: authField("alice", BASIC_PASSWORD) } } });
    const seen = spyAuthorization(basicProxy);
    const log = capture();
    const result = await pull(`${basicProxy.host}/team/basic-model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, basicModel);

    // The unauthenticated GET /v2/ learns the scheme; everything after it (manifest, config, shards) carries Basic.
    expect(seen[0]).toEqual({ method: "GET", path: "/v2/" });
    const rest = seen.slice(1);
    expect(rest.length).toBeGreaterThanOrEqual(4);
    for (const request of rest) expect(request.authorization).toBe(basicHeader("alice", BASIC_PASSWORD));
    expect(basicProxy.requests.filter((r) => r.status === 401).map((r) => r.path)).toEqual(["/v2/"]);
    expect(log.warnings).toEqual([]);
    expectNoSecrets(log);
  });

  test("a wrong password: UNAUTHORIZED saying the credentials were rejected, with a docker login hint", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [basicRegistry.host]: { auth: authField("alice", WRONG_PASSWORD) } } });
    const log = capture();
    const error = await pullError(`${basicRegistry.host}/team/basic-model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("UNAUTHORIZED");
    expect(error.message).toMatch(/rejected the credentials/);
    expect(error.message).toContain(join(sandbox.home, ".docker", "config.json"));
    expect(error.hint).toContain(`docker login ${basicRegistry.host}`);
    expectNoSecrets(log, error);
  });

  test("no credentials at all: UNAUTHORIZED with a docker login hint", async () => {
    const sandbox = await newSandbox();
    const log = capture();
    const error = await pullError(`${basicRegistry.host}/team/basic-model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("UNAUTHORIZED");
    expect(error.message).toContain("team/basic-model");
    expect(error.hint).toContain(`docker login ${basicRegistry.host}`);
    expectNoSecrets(log, error);
  });
});

describe("token (Bearer) registry", () => {
  test("private repository with config.json auths: the token server saw one GET with Basic and the pull scope", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests).toHaveLength(1);
    const [request] = tokenServer.requests;
    expect(request).toMatchObject({ method: "GET", path: "/token", authorization: aliceBasic() });
    expect(request!.query.scope).toBe(PRIVATE_SCOPE);
    expect(request!.query.service).toBe(tokenServer.service);
    expectNoSecrets(log);
  });

  test("private repository without credentials: UNAUTHORIZED with a login hint, after one anonymous refresh at most", async () => {
    const sandbox = await newSandbox();
    const log = capture();
    const error = await pullError(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("UNAUTHORIZED");
    expect(error.message).toContain("private/model");
    expect(error.hint).toContain(`docker login ${tokenRegistry.host}`);
    expect(tokenServer.requests.length).toBeGreaterThanOrEqual(1);
    expect(tokenServer.requests.length).toBeLessThanOrEqual(2);
    for (const request of tokenServer.requests) expect(request.authorization).toBeUndefined();
    expectNoSecrets(log, error);
  });

  test("a wrong password at the token server: UNAUTHORIZED naming the credentials' source, with a login hint", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", WRONG_PASSWORD) } } });
    const log = capture();
    const error = await pullError(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("UNAUTHORIZED");
    expect(error.message).toContain(join(sandbox.home, ".docker", "config.json"));
    expect(error.hint).toContain(`docker login ${tokenRegistry.host}`);
    // Rejected credentials are not silently swapped for an anonymous token.
    expect(tokenServer.requests.every((r) => r.authorization === basicHeader("alice", WRONG_PASSWORD))).toBe(true);
    expectNoSecrets(log, error);
  });

  test("valid credentials without access to the repository: DENIED, not a request to re-check the password", async () => {
    await pushArtifact(
      { registryUrl: tokenRegistry.url, repository: "someone-else/model", auth: { username: "admin", password: ADMIN_PASSWORD } },
      "v1",
      dockerV01({ ggufs: [publicModel] }),
    );
    tokenServer.requests.splice(0);
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const log = capture();
    const error = await pullError(`${tokenRegistry.host}/someone-else/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("DENIED");
    expect(error.message).toContain("someone-else/model");
    expect(error.message).toContain(join(sandbox.home, ".docker", "config.json"));
    expect(error.message).not.toMatch(/rejected the credentials/);
    expect(error.hint).toMatch(/repository name/);
    expect(error.hint).not.toMatch(/password/);
    expect(tokenServer.requests.every((r) => r.authorization === aliceBasic())).toBe(true);
    expect(tokenServer.requests.length).toBeLessThanOrEqual(2);
    expectNoSecrets(log, error);
  });

  test("public repository: an anonymous token GET without Authorization", async () => {
    const sandbox = await newSandbox();
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/public/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, [publicModel]);
    expect(tokenServer.requests).toHaveLength(1);
    expect(tokenServer.requests[0]).toMatchObject({ method: "GET" });
    expect(tokenServer.requests[0]!.authorization).toBeUndefined();
    expect(tokenServer.requests[0]!.query.scope).toBe(PUBLIC_SCOPE);
    expectNoSecrets(log);
  });

  test("a multi-file model needs one token for its scope, reused for the manifest and every blob", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [tokenProxy.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const seen = spyAuthorization(tokenProxy);
    const log = capture();
    const result = await pull(`${tokenProxy.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests).toHaveLength(1);

    const authorized = seen.filter((r) => r.path !== "/v2/");
    // manifest + config + 3 shards + license
    expect(authorized.filter((r) => r.path.includes("/blobs/"))).toHaveLength(5);
    expect(authorized.filter((r) => r.path.includes("/manifests/")).length).toBeGreaterThanOrEqual(1);
    const headers = new Set(authorized.map((r) => r.authorization));
    expect(headers.size).toBe(1);
    expect([...headers][0]).toMatch(/^Bearer eyJ/);
    expectNoSecrets(log);
  });
});

describe("credential helpers", () => {
  test('"credsStore": the helper on PATH is asked with the registry host on stdin', async () => {
    const sandbox = await newSandbox();
    const helper = await sandbox.writeHelper("teststore", { username: "alice", secret: ALICE_PASSWORD });
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: {} }, credsStore: "teststore" });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(await helper.calls()).toEqual([{ action: "get", stdin: tokenRegistry.host }]);
    expect(tokenServer.requests.map((r) => [r.method, r.authorization])).toEqual([["GET", aliceBasic()]]);
    expectNoSecrets(log);
  });

  test('"credHelpers[host]" wins over "credsStore"', async () => {
    const sandbox = await newSandbox();
    const perHost = await sandbox.writeHelper("perhost", { username: "alice", secret: ALICE_PASSWORD });
    const store = await sandbox.writeHelper("otherstore", { username: "alice", secret: WRONG_PASSWORD });
    await sandbox.writeDockerConfig({ credsStore: "otherstore", credHelpers: { [tokenRegistry.host]: "perhost" } });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(await perHost.calls()).toEqual([{ action: "get", stdin: tokenRegistry.host }]);
    expect(await store.calls()).toEqual([]);
    expect(tokenServer.requests.map((r) => r.authorization)).toEqual([aliceBasic()]);
    expectNoSecrets(log);
  });

  test("a helper answering the <token> username: an OAuth2 refresh_token POST, no GET", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeHelper("idtoken", { username: "<token>", secret: IDENTITY_TOKEN });
    await sandbox.writeDockerConfig({ credsStore: "idtoken" });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests).toHaveLength(1);
    const [post] = tokenServer.requests;
    expect(post!.method).toBe("POST");
    expect(post!.form).toMatchObject({
      grant_type: "refresh_token",
      refresh_token: IDENTITY_TOKEN,
      service: tokenServer.service,
      scope: PRIVATE_SCOPE,
    });
    expect(post!.form!.client_id).toBeTruthy();
    expectNoSecrets(log);
  });

  test("the same with a token server without OAuth2 (POST answers 404): falls back to GET with Basic", async () => {
    tokenServer.options.oauthPost = false;
    const sandbox = await newSandbox();
    await sandbox.writeHelper("idtoken", { username: "<token>", secret: IDENTITY_TOKEN });
    await sandbox.writeDockerConfig({ credsStore: "idtoken" });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests.map((r) => r.method)).toEqual(["POST", "GET"]);
    expect(tokenServer.requests[1]!.authorization).toBe(basicHeader("<token>", IDENTITY_TOKEN));
    expect(tokenServer.requests[1]!.query.scope).toBe(PRIVATE_SCOPE);
    expectNoSecrets(log);
  });

  test("a failing helper (exit 1): a warning naming it, then an anonymous pull that works for a public repository", async () => {
    const sandbox = await newSandbox();
    const helper = await sandbox.writeHelper("broken", { exitCode: 1, stdout: "keychain is locked" });
    await sandbox.writeDockerConfig({ credsStore: "broken", auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/public/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, [publicModel]);
    expect(await helper.calls()).toEqual([{ action: "get", stdin: tokenRegistry.host }]);
    expect(log.warnings).toHaveLength(1);
    expect(log.warnings[0]).toContain("docker-credential-broken");
    expect(log.warnings[0]).toContain("keychain is locked");
    expect(log.warnings[0]).toMatch(/anonymous/);
    // With a helper configured the auths entry is not used (Docker CLI semantics): the token GET is anonymous.
    expect(tokenServer.requests).toHaveLength(1);
    expect(tokenServer.requests[0]!.authorization).toBeUndefined();
    expectNoSecrets(log);
  });
});

describe("other credential sources", () => {
  test("podman auth.json named by REGISTRY_AUTH_FILE", async () => {
    const sandbox = await newSandbox();
    const authFile = await writeJsonFile(join(sandbox.home, "elsewhere", "my-auth.json"), {
      auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } },
    });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, {
      cacheDir: newCache(),
      env: sandbox.env({ REGISTRY_AUTH_FILE: authFile }),
      ...log.options,
    });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests.map((r) => r.authorization)).toEqual([aliceBasic()]);
    expectNoSecrets(log);
  });

  test("podman $XDG_RUNTIME_DIR/containers/auth.json, keyed with a scheme", async () => {
    const sandbox = await newSandbox();
    const runtimeDir = join(sandbox.home, "run");
    await writeJsonFile(join(runtimeDir, "containers", "auth.json"), {
      auths: { [`https://${tokenRegistry.host}`]: { auth: authField("alice", ALICE_PASSWORD) } },
    });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, {
      cacheDir: newCache(),
      env: sandbox.env({ XDG_RUNTIME_DIR: runtimeDir }),
      ...log.options,
    });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests.map((r) => r.authorization)).toEqual([aliceBasic()]);
    expectNoSecrets(log);
  });

  test("DOCKER_AUTH_CONFIG wins over config.json", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", WRONG_PASSWORD) } } });
    const fromEnv = JSON.stringify({ auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, {
      cacheDir: newCache(),
      env: sandbox.env({ DOCKER_AUTH_CONFIG: fromEnv }),
      ...log.options,
    });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests.map((r) => r.authorization)).toEqual([aliceBasic()]);
    expectNoSecrets(log, undefined, [fromEnv]);
  });

  test("a registrytoken entry is sent as Bearer directly: the token server gets no request", async () => {
    const sandbox = await newSandbox();
    const registryToken = tokenServer.mintToken("alice", [{ type: "repository", name: "private/model", actions: ["pull"] }], 300);
    await sandbox.writeDockerConfig({ auths: { [tokenProxy.host]: { registrytoken: registryToken } } });
    const seen = spyAuthorization(tokenProxy);
    const log = capture();
    const result = await pull(`${tokenProxy.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, privateModel);
    expect(tokenServer.requests).toEqual([]);
    const afterPing = seen.filter((r) => r.path !== "/v2/");
    expect(afterPing.length).toBeGreaterThanOrEqual(6);
    for (const request of afterPing) expect(request.authorization).toBe(`Bearer ${registryToken}`);
    expectNoSecrets(log, undefined, [registryToken]);
  });

  test("explicit API credentials override the config files, whose helper is never run", async () => {
    const sandbox = await newSandbox();
    const helper = await sandbox.writeHelper("unused", { username: "alice", secret: WRONG_PASSWORD });
    await sandbox.writeDockerConfig({ credsStore: "unused", auths: { [tokenRegistry.host]: { auth: authField("alice", WRONG_PASSWORD) } } });
    const log = capture();
    const result = await pull(`${tokenRegistry.host}/private/model:v1`, {
      cacheDir: newCache(),
      env: sandbox.env({ DOCKER_AUTH_CONFIG: JSON.stringify({ auths: { [tokenRegistry.host]: { auth: authField("alice", WRONG_PASSWORD) } } }) }),
      credentials: { username: "alice", password: ALICE_PASSWORD },
      ...log.options,
    });
    await expectFiles(result, privateModel);
    expect(await helper.calls()).toEqual([]);
    expect(tokenServer.requests.map((r) => r.authorization)).toEqual([aliceBasic()]);
    expect(log.warnings).toEqual([]);
    expectNoSecrets(log);
  });
});

describe("re-challenge", () => {
  test("a token the registry rejects (invalid_token) is refreshed exactly once, and the pull goes on", async () => {
    // The token server's first token is already expired beyond the registry's 60 s leeway; from the second
    // token request on it issues good ones again (switched when that request is recorded, before minting).
    tokenServer.options.expiresIn = -300;
    const requests = tokenServer.requests;
    const record = requests.push.bind(requests);
    requests.push = (...items: RecordedTokenRequest[]) => {
      const length = record(...items);
      if (length >= 2) tokenServer.options.expiresIn = 300;
      return length;
    };
    try {
      const sandbox = await newSandbox();
      await sandbox.writeDockerConfig({ auths: { [tokenRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
      const log = capture();
      const result = await pull(`${tokenRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
      await expectFiles(result, privateModel);
      expect(requests).toHaveLength(2);
      expect(scopesOf(requests)).toEqual([PRIVATE_SCOPE, PRIVATE_SCOPE]);
      expect(requests.every((r) => r.authorization === aliceBasic())).toBe(true);
      expect(log.debug.join("\n")).toMatch(/invalid_token/);
      expectNoSecrets(log);
    } finally {
      delete (requests as { push?: unknown }).push;
    }
  });

  test("a token server whose tokens never work: UNAUTHORIZED after one refresh, no loop", async () => {
    tokenServer.options.expiresIn = -300;
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [tokenProxy.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const log = capture();
    const error = await pullError(`${tokenProxy.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("UNAUTHORIZED");
    // The token server accepted the password, so the message is about the token, not the password.
    expect(error.message).toMatch(/token/);
    expect(error.message).not.toMatch(/rejected the credentials/);
    expect(error.hint).toContain(`docker login ${tokenProxy.host}`);
    expect(tokenServer.requests).toHaveLength(2);
    expect(tokenProxy.requests.filter((r) => r.path.includes("/manifests/")).length).toBeLessThanOrEqual(3);
    expectNoSecrets(log, error);
  });

  test("an expired registrytoken: UNAUTHORIZED with a login hint, no token exchange and no loop", async () => {
    const sandbox = await newSandbox();
    const expired = tokenServer.mintToken("alice", [{ type: "repository", name: "private/model", actions: ["pull"] }], -300);
    await sandbox.writeDockerConfig({ auths: { [tokenProxy.host]: { registrytoken: expired } } });
    const log = capture();
    const error = await pullError(`${tokenProxy.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    expect(error.code).toBe("UNAUTHORIZED");
    expect(error.message).toContain(join(sandbox.home, ".docker", "config.json"));
    expect(error.hint).toContain(`docker login ${tokenProxy.host}`);
    expect(tokenServer.requests).toEqual([]);
    const manifestRequests = tokenProxy.requests.filter((r) => r.path.includes("/manifests/"));
    expect(manifestRequests.length).toBeGreaterThanOrEqual(1);
    expect(manifestRequests.length).toBeLessThanOrEqual(2);
    expect(manifestRequests.every((r) => r.status === 401)).toBe(true);
    expectNoSecrets(log, error, [expired]);
  });
});

describe("token registry redirecting blobs to a CDN", () => {
  const gguf = cdnModel;
  const blobPath = (digest: string) => `/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;

  test("the pull works; the CDN served every blob and never saw an Authorization header", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [cdnRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const log = capture();
    const result = await pull(`${cdnRegistry.host}/private/model:v1`, { cacheDir: newCache(), env: sandbox.env(), ...log.options });
    await expectFiles(result, [gguf]);
    const manifest = await cachedManifest(join(result.modelDir, "..", "..", ".."), result.digest);
    const blobGets = cdn.requests.filter((r) => r.method === "GET").map((r) => r.path).sort();
    expect(blobGets).toEqual([manifest.config.digest, ...manifest.layers.map((l) => l.digest)].map(blobPath).sort());
    for (const request of cdn.requests) expect(request.headers.authorization).toBeUndefined();
    expect(tokenServer.requests.map((r) => r.authorization)).toEqual([aliceBasic()]);
    expectNoSecrets(log);
  });

  test("a partial download in the cache resumes through the CDN with a closed Range", async () => {
    const sandbox = await newSandbox();
    await sandbox.writeDockerConfig({ auths: { [cdnRegistry.host]: { auth: authField("alice", ALICE_PASSWORD) } } });
    const digest = digestOf(gguf);
    const hex = digest.slice(7);
    const partialBytes = 123_457;
    const cacheDir = newCache();
    const blobs = join(cacheDir, "oci", "blobs", "sha256");
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${hex}.tmp`), gguf.subarray(0, partialBytes));
    await writeFile(join(blobs, `${hex}.digest`), `${digest}\n`);

    const log = capture();
    const result = await pull(`${cdnRegistry.host}/private/model:v1`, { cacheDir, env: sandbox.env(), ...log.options });
    await expectFiles(result, [gguf]);
    const forLayer = cdn.requests.filter((r) => r.method === "GET" && r.path === blobPath(digest));
    expect(forLayer).toHaveLength(1);
    expect(forLayer[0]!.headers.range).toBe(`bytes=${partialBytes}-${gguf.length - 1}`);
    expect(forLayer[0]!.headers.authorization).toBeUndefined();
    // Only the missing tail of the GGUF crossed the network, besides the config and license blobs.
    const manifest = await cachedManifest(cacheDir, result.digest);
    const others = [manifest.config, ...manifest.layers].filter((d) => d.digest !== digest).reduce((sum, d) => sum + d.size, 0);
    expect(result.bytesTransferred).toBe(others + gguf.length - partialBytes);
    expectNoSecrets(log);
  });
});

interface CachedManifest {
  config: { digest: string; size: number };
  layers: { digest: string; size: number }[];
}

async function cachedManifest(cacheDir: string, digest: string): Promise<CachedManifest> {
  return JSON.parse(await readFile(join(cacheDir, "oci", "manifests", "sha256", digest.slice(7)), "utf8")) as CachedManifest;
}
