import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LlamaOciError } from "../src/errors.js";
import type { Logger } from "../src/log.js";
import { runCredentialHelper } from "../src/oci/authn/credential-helper.js";
import { convertToHostname } from "../src/oci/authn/docker-config.js";
import {
  credentialKey,
  describeCredential,
  resolveCredentials,
  type Credential,
  type CredentialOptions,
} from "../src/oci/authn/index.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const HUB = "https://index.docker.io/v1/";
// Every secret used below; no warning or description may contain any of them.
const SECRETS = ["file-pass-1", "env-pass-2", "helper-pass-3", "id-token-4", "reg-token-5", "podman-pass-6", "garbled-7"];

const b64 = (text: string) => Buffer.from(text).toString("base64");

let root: string;
let home: string;
let bin: string;
let warnings: string[];
let env: NodeJS.ProcessEnv;

const logger: Logger = { debugEnabled: false, warn: (m) => warnings.push(m), debug: () => {} };

beforeEach(async () => {
  root = await makeTempDir("llama-oci-creds");
  home = join(root, "home");
  bin = join(root, "bin");
  await mkdir(home, { recursive: true });
  await mkdir(bin, { recursive: true });
  warnings = [];
  env = { HOME: home, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}` };
});

afterEach(async () => {
  for (const w of warnings) for (const s of SECRETS) expect(w).not.toContain(s);
  await removeDir(root);
});

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, typeof value === "string" ? value : JSON.stringify(value));
}

const dockerConfig = (value: unknown) => writeJson(join(home, ".docker", "config.json"), value);

/** A real `docker-credential-<name>` on the test PATH. */
async function helper(name: string, body: string): Promise<string> {
  const path = join(bin, `docker-credential-${name}`);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

/** Answers `get` with fixed credentials and records exactly what it read on stdin. */
const answeringHelper = (name: string, username: string, secret: string) =>
  helper(
    name,
    `[ "$1" = get ] || { echo "unexpected arguments: $*"; exit 3; }
cat > "$0.stdin"
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}' "$(cat "$0.stdin")" '${username}' '${secret}'`,
  );

function resolve(registry: string, extra: Partial<CredentialOptions> = {}): Promise<Credential> {
  return resolveCredentials(registry, { env, logger, ...extra });
}

function expectNoSecrets(credential: Credential): void {
  const text = describeCredential(credential);
  for (const s of SECRETS) expect(text).not.toContain(s);
}

describe("credentialKey", () => {
  it("uses the legacy index URL for every Docker Hub name and host[:port] otherwise", () => {
    expect(credentialKey("docker.io")).toBe(HUB);
    expect(credentialKey("index.docker.io")).toBe(HUB);
    expect(credentialKey("registry-1.docker.io")).toBe(HUB);
    expect(credentialKey("127.0.0.1:5000")).toBe("127.0.0.1:5000");
    expect(credentialKey("ghcr.io")).toBe("ghcr.io");
  });
});

describe("convertToHostname", () => {
  it.each([
    ["http://example.com", "example.com"],
    ["https://example.com/v2/", "example.com"],
    ["https://example.com:6555/v2/", "example.com:6555"],
    ["https://[::1]:6555/v2/", "[::1]:6555"],
    ["https://::1:6555/v2/", "[::1]:6555"],
    ["127.0.0.1:6556", "127.0.0.1:6556"],
    ["example.com", "example.com"],
  ])("%s -> %s", (key, hostname) => {
    expect(convertToHostname(key)).toBe(hostname);
  });
});

describe("resolveCredentials from config.json auths", () => {
  it("decodes an auth field, splitting at the first colon and trimming NULs", async () => {
    await dockerConfig({ auths: { "127.0.0.1:5000": { auth: b64("alice:file-pass-1:x\0\0") } } });
    const credential = await resolve("127.0.0.1:5000");
    expect(credential).toEqual({
      kind: "basic",
      username: "alice",
      password: "file-pass-1:x",
      source: `${join(home, ".docker", "config.json")} auths["127.0.0.1:5000"]`,
    });
    expectNoSecrets(credential);
    expect(describeCredential(credential)).toContain("alice");
    expect(warnings).toEqual([]);
  });

  it("accepts unpadded base64", async () => {
    const unpadded = b64("bob:file-pass-1x").replace(/=+$/, "");
    expect(unpadded.length % 4).not.toBe(0);
    await dockerConfig({ auths: { "r.example": { auth: unpadded } } });
    expect(await resolve("r.example")).toMatchObject({ kind: "basic", username: "bob", password: "file-pass-1x" });
  });

  it("reads username and password fields", async () => {
    await dockerConfig({ auths: { "r.example": { username: "carol", password: "file-pass-1" } } });
    expect(await resolve("r.example")).toMatchObject({ kind: "basic", username: "carol", password: "file-pass-1" });
  });

  it("reads an identity token, keeping the username", async () => {
    await dockerConfig({ auths: { "r.example": { auth: b64("dave:"), identitytoken: "id-token-4" } } });
    const credential = await resolve("r.example");
    expect(credential).toMatchObject({ kind: "identityToken", username: "dave", identityToken: "id-token-4" });
    expectNoSecrets(credential);
  });

  it("reads a registry token", async () => {
    await dockerConfig({ auths: { "r.example": { registrytoken: "reg-token-5" } } });
    const credential = await resolve("r.example");
    expect(credential).toMatchObject({ kind: "registryToken", registryToken: "reg-token-5" });
    expectNoSecrets(credential);
  });

  it("matches a URL key by its host:port, but prefers the exact key", async () => {
    await dockerConfig({ auths: { "https://registry.example.com:6555/v2/": { auth: b64("url:file-pass-1") } } });
    expect(await resolve("registry.example.com:6555")).toMatchObject({
      username: "url",
      source: expect.stringContaining('auths["https://registry.example.com:6555/v2/"]') as unknown,
    });
    expect(await resolve("registry.example.com")).toEqual({ kind: "anonymous" });

    await dockerConfig({
      auths: {
        "https://registry.example.com:6555/v2/": { auth: b64("url:file-pass-1") },
        "registry.example.com:6555": { auth: b64("exact:file-pass-1") },
      },
    });
    expect(await resolve("registry.example.com:6555")).toMatchObject({ username: "exact" });
  });

  it("finds Docker Hub credentials under https://index.docker.io/v1/ for every Hub name", async () => {
    await dockerConfig({ auths: { [HUB]: { auth: b64("hubuser:file-pass-1") } } });
    for (const registry of ["docker.io", "index.docker.io", "registry-1.docker.io"]) {
      expect(await resolve(registry)).toMatchObject({ kind: "basic", username: "hubuser" });
    }
  });

  it("uses $DOCKER_CONFIG instead of ~/.docker", async () => {
    await dockerConfig({ auths: { "r.example": { auth: b64("home:file-pass-1") } } });
    const elsewhere = join(root, "elsewhere");
    await writeJson(join(elsewhere, "config.json"), { auths: { "r.example": { auth: b64("moved:file-pass-1") } } });
    expect(await resolve("r.example", { env: { ...env, DOCKER_CONFIG: elsewhere } })).toMatchObject({ username: "moved" });
  });

  it("treats an empty {} entry as no credentials", async () => {
    await dockerConfig({ auths: { "r.example": {} } });
    expect(await resolve("r.example")).toEqual({ kind: "anonymous" });
    expect(warnings).toEqual([]);
  });

  it("warns about an undecodable entry and goes on to the next matching key", async () => {
    await dockerConfig({
      auths: {
        "r.example": { auth: "!!not base64 garbled-7" },
        "https://r.example/v2/": { auth: b64("next:file-pass-1") },
      },
    });
    expect(await resolve("r.example")).toMatchObject({ username: "next" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('auths["r.example"]');
    expect(warnings[0]).toContain("base64");

    await dockerConfig({ auths: { "r.example": { auth: b64("no-colon-garbled-7") } } });
    warnings = [];
    expect(await resolve("r.example")).toEqual({ kind: "anonymous" });
    expect(warnings[0]).toContain("user:password");
  });

  it("warns about a malformed config.json without quoting it, and falls back", async () => {
    await dockerConfig(`{"auths": {"r.example": {"auth": "${b64("x:garbled-7")}"}`);
    await writeJson(join(root, "podman.json"), { auths: { "r.example": { auth: b64("pod:podman-pass-6") } } });
    const credential = await resolve("r.example", { env: { ...env, REGISTRY_AUTH_FILE: join(root, "podman.json") } });
    expect(credential).toMatchObject({ username: "pod" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(join(home, ".docker", "config.json"));
    expect(warnings[0]).toContain("not valid JSON");
    expect(warnings[0]).not.toContain(b64("x:garbled-7"));
  });
});

describe("resolveCredentials precedence", () => {
  it("explicit credentials win over everything", async () => {
    await dockerConfig({ auths: { "r.example": { auth: b64("file:file-pass-1") } } });
    expect(await resolve("r.example", { explicit: { username: "api", password: "x" } })).toEqual({
      kind: "basic",
      username: "api",
      password: "x",
      source: "explicit credentials",
    });
    expect(await resolve("r.example", { explicit: { registryToken: "reg-token-5" } })).toMatchObject({ kind: "registryToken" });
    await expect(resolve("r.example", { explicit: { username: "", password: "x" } })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
  });

  it("DOCKER_AUTH_CONFIG wins over config.json auths and helpers, by exact key only", async () => {
    await answeringHelper("llt-store", "helperuser", "helper-pass-3");
    await dockerConfig({ credsStore: "llt-store", auths: { "r.example": { auth: b64("file:file-pass-1") } } });
    const envConfig = JSON.stringify({
      auths: { "r.example": { auth: b64("envuser:env-pass-2") }, "https://other.example/v2/": { auth: b64("no:env-pass-2") } },
    });
    const withEnv = { ...env, DOCKER_AUTH_CONFIG: envConfig };
    expect(await resolve("r.example", { env: withEnv })).toEqual({
      kind: "basic",
      username: "envuser",
      password: "env-pass-2",
      source: "DOCKER_AUTH_CONFIG",
    });
    expect(await resolve("other.example", { env: withEnv })).toMatchObject({ username: "helperuser" });
  });

  it("a Docker config entry wins over podman auth.json", async () => {
    await dockerConfig({ auths: { "r.example": { auth: b64("docker:file-pass-1") } } });
    await writeJson(join(root, "podman.json"), { auths: { "r.example": { auth: b64("pod:podman-pass-6") } } });
    expect(await resolve("r.example", { env: { ...env, REGISTRY_AUTH_FILE: join(root, "podman.json") } })).toMatchObject({
      username: "docker",
    });
  });

  it("is anonymous when nothing is configured", async () => {
    expect(await resolve("r.example")).toEqual({ kind: "anonymous" });
    expect(describeCredential({ kind: "anonymous" })).toBe("anonymous");
    expect(warnings).toEqual([]);
  });
});

describe("resolveCredentials with credential helpers", () => {
  it("runs credsStore with the key on stdin, no newline", async () => {
    const path = await answeringHelper("llt-store", "helperuser", "helper-pass-3");
    await dockerConfig({ credsStore: "llt-store", auths: { [HUB]: {} } });
    const credential = await resolve("docker.io");
    expect(credential).toEqual({
      kind: "basic",
      username: "helperuser",
      password: "helper-pass-3",
      source: "credential helper docker-credential-llt-store",
    });
    expect(await readFile(`${path}.stdin`, "utf8")).toBe(HUB);
    expectNoSecrets(credential);
  });

  it("prefers credHelpers[key] over credsStore, and accepts credHelpers[\"docker.io\"] for the Hub", async () => {
    await answeringHelper("llt-store", "storeuser", "helper-pass-3");
    await answeringHelper("llt-local", "localuser", "helper-pass-3");
    await answeringHelper("llt-hub", "hubuser", "helper-pass-3");
    await dockerConfig({
      credsStore: "llt-store",
      credHelpers: { "127.0.0.1:5000": "llt-local", "docker.io": "llt-hub" },
    });
    expect(await resolve("127.0.0.1:5000")).toMatchObject({ username: "localuser" });
    expect(await resolve("docker.io")).toMatchObject({ username: "hubuser" });
    expect(await resolve("ghcr.io")).toMatchObject({ username: "storeuser" });
  });

  it("turns a <token> username into an identity token", async () => {
    await answeringHelper("llt-token", "<token>", "id-token-4");
    await dockerConfig({ credHelpers: { "r.example": "llt-token" } });
    const credential = await resolve("r.example");
    expect(credential).toEqual({
      kind: "identityToken",
      identityToken: "id-token-4",
      source: "credential helper docker-credential-llt-token",
    });
    expectNoSecrets(credential);
  });

  it("is anonymous when the helper has no credentials, ignoring auths in the file", async () => {
    await helper("llt-empty", `cat >/dev/null; echo "credentials not found in native keychain"; exit 1`);
    await dockerConfig({ credsStore: "llt-empty", auths: { "r.example": { auth: b64("file:file-pass-1") } } });
    await writeJson(join(root, "podman.json"), { auths: { "r.example": { auth: b64("pod:podman-pass-6") } } });
    expect(await resolve("r.example", { env: { ...env, REGISTRY_AUTH_FILE: join(root, "podman.json") } })).toEqual({
      kind: "anonymous",
    });
    expect(warnings).toEqual([]);
  });

  it("warns about a failing helper and goes anonymous, not to the file's auths", async () => {
    await helper("llt-broken", `cat >/dev/null; echo "gpg: decryption failed: No secret key"; exit 1`);
    await dockerConfig({ credsStore: "llt-broken", auths: { "r.example": { auth: b64("file:file-pass-1") } } });
    expect(await resolve("r.example")).toEqual({ kind: "anonymous" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("docker-credential-llt-broken");
    expect(warnings[0]).toContain("gpg: decryption failed: No secret key");
    expect(warnings[0]).toContain('"credsStore"');
    expect(warnings[0]).toContain("anonymously");
  });

  it("warns about a helper that is not installed", async () => {
    await dockerConfig({ credHelpers: { "r.example": "llt-missing" } });
    expect(await resolve("r.example")).toEqual({ kind: "anonymous" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("docker-credential-llt-missing is not installed");
    expect(warnings[0]).toContain('credHelpers["r.example"]');
  });

  it("gives up on a hanging helper after the timeout", async () => {
    await helper("llt-hang", "exec sleep 30");
    await dockerConfig({ credsStore: "llt-hang" });
    const started = Date.now();
    expect(await resolve("r.example", { helperTimeoutMs: 300 })).toEqual({ kind: "anonymous" });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("docker-credential-llt-hang did not answer within 300ms");
  });

  it("warns about output that is not JSON without repeating it", async () => {
    await helper("llt-garbled", `cat >/dev/null; echo "Secret: garbled-7"`);
    await dockerConfig({ credsStore: "llt-garbled" });
    expect(await resolve("r.example")).toEqual({ kind: "anonymous" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("not JSON");
  });
});

describe("resolveCredentials from podman auth.json", () => {
  it("reads REGISTRY_AUTH_FILE, which wins over $XDG_RUNTIME_DIR", async () => {
    const runtime = join(root, "run");
    await writeJson(join(runtime, "containers", "auth.json"), { auths: { "quay.io": { auth: b64("runtime:podman-pass-6") } } });
    await writeJson(join(root, "authfile.json"), { auths: { "quay.io": { auth: b64("authfile:podman-pass-6") } } });
    const credential = await resolve("quay.io", {
      env: { ...env, XDG_RUNTIME_DIR: runtime, REGISTRY_AUTH_FILE: join(root, "authfile.json") },
    });
    expect(credential).toEqual({
      kind: "basic",
      username: "authfile",
      password: "podman-pass-6",
      source: `${join(root, "authfile.json")} auths["quay.io"]`,
    });
    expectNoSecrets(credential);
  });

  it("reads $XDG_RUNTIME_DIR/containers/auth.json, then the next file when it has no match", async () => {
    const runtime = join(root, "run");
    await writeJson(join(runtime, "containers", "auth.json"), {
      auths: { "docker.io": { auth: b64("hub:podman-pass-6") } },
    });
    await writeJson(join(home, ".config", "containers", "auth.json"), {
      auths: { "https://quay.io/v2/": { auth: b64("cfg:podman-pass-6") } },
    });
    const withRuntime = { ...env, XDG_RUNTIME_DIR: runtime };
    expect(await resolve("docker.io", { env: withRuntime })).toMatchObject({ username: "hub" });
    expect(await resolve("quay.io", { env: withRuntime })).toMatchObject({ username: "cfg" });
  });

  it("reads only REGISTRY_AUTH_FILE when it is set, even when that file has no match", async () => {
    const runtime = join(root, "run");
    await writeJson(join(runtime, "containers", "auth.json"), { auths: { "quay.io": { auth: b64("runtime:podman-pass-6") } } });
    await writeJson(join(root, "authfile.json"), { auths: { "other.example": { auth: b64("other:podman-pass-6") } } });
    const credential = await resolve("quay.io", { env: { ...env, XDG_RUNTIME_DIR: runtime, REGISTRY_AUTH_FILE: join(root, "authfile.json") } });
    expect(credential).toEqual({ kind: "anonymous" });
  });

  it("matches repository-scoped keys, the longest first, then the registry's own", async () => {
    await writeJson(join(root, "authfile.json"), {
      auths: {
        "quay.io": { auth: b64("registry:podman-pass-6") },
        "quay.io/org": { auth: b64("namespace:podman-pass-6") },
        "quay.io/org/team/repo": { auth: b64("repository:podman-pass-6") },
        "Registry.Example.com/team": { auth: b64("scoped:podman-pass-6") },
        "docker.io/library": { auth: b64("library:podman-pass-6") },
      },
    });
    const withFile = { env: { ...env, REGISTRY_AUTH_FILE: join(root, "authfile.json") } };
    const user = async (registry: string, repository?: string) =>
      ((await resolve(registry, { ...withFile, repository })) as { username?: string }).username;
    expect(await user("quay.io", "org/team/repo")).toBe("repository");
    expect(await user("quay.io", "org/team/other")).toBe("namespace");
    expect(await user("quay.io", "org/app")).toBe("namespace");
    expect(await user("quay.io", "elsewhere/app")).toBe("registry");
    expect(await user("quay.io")).toBe("registry");
    expect(await user("registry.example.com", "team/model")).toBe("scoped");
    expect(await user("registry.example.com", "other/model")).toBeUndefined();
    expect(await user("docker.io", "library/ubuntu")).toBe("library");
    expect(await user("docker.io", "ai/smollm2")).toBeUndefined();
  });

  it("is not consulted when a Docker credential helper applies", async () => {
    await answeringHelper("llt-store", "helperuser", "helper-pass-3");
    await dockerConfig({ credsStore: "llt-store" });
    await writeJson(join(root, "authfile.json"), { auths: { "quay.io": { auth: b64("pod:podman-pass-6") } } });
    expect(await resolve("quay.io", { env: { ...env, REGISTRY_AUTH_FILE: join(root, "authfile.json") } })).toMatchObject({
      username: "helperuser",
    });
  });
});

describe("runCredentialHelper", () => {
  it("returns the helper's answer, null for not found, and throws CREDENTIALS otherwise", async () => {
    await answeringHelper("llt-ok", "u", "helper-pass-3");
    await helper("llt-none", `cat >/dev/null; echo "credentials not found in native keychain"; exit 1`);
    await helper("llt-fail", `cat >/dev/null; echo "no credentials server URL" >&2; exit 2`);
    expect(await runCredentialHelper("llt-ok", "r.example", { env })).toEqual({ username: "u", secret: "helper-pass-3" });
    expect(await runCredentialHelper("llt-none", "r.example", { env })).toBeNull();
    const failure = await runCredentialHelper("llt-fail", "r.example", { env }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(LlamaOciError);
    expect(failure).toMatchObject({ code: "CREDENTIALS" });
    expect((failure as Error).message).toBe("credential helper docker-credential-llt-fail exited with code 2: no credentials server URL");
  });

  it("stops at once when aborted", async () => {
    await helper("llt-hang", "exec sleep 30");
    const controller = new AbortController();
    const pending = runCredentialHelper("llt-hang", "r.example", { env, signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ code: "ABORTED" });
  });
});
