/**
 * Self-test of the test infrastructure (real registry 2.8.2, token server, CDN, fault proxy) using plain fetch,
 * independent of the library: if these fail, the library's pull tests cannot be trusted.
 */
import { createHash, createPublicKey } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dockerV01, dockerV02, fakeGguf, MEDIA, modelPack, preRelease, ANNOTATION_FILEPATH } from "./helpers/artifacts.js";
import { startCdn } from "./helpers/cdn.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { digestOf, OCI_INDEX, OCI_MANIFEST, pushArtifact, pushBlob, pushIndex, type PushTarget } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";
import { libtrustKeyId, startTokenServer, type TokenServer } from "./helpers/token-server.js";

const ACCEPT = [OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json"].join(", ");

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
}

async function getManifest(registry: string, repo: string, ref: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${registry}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT, ...headers } });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

function sha256(data: Buffer | Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

describe("fakeGguf", () => {
  it("starts with the GGUF v3 header and is seeded", () => {
    const a = fakeGguf(4096, 1);
    expect(a.subarray(0, 4).toString("latin1")).toBe("GGUF");
    expect(a.readUInt32LE(4)).toBe(3);
    expect(a.length).toBe(4096);
    expect(fakeGguf(4096, 1).equals(a)).toBe(true);
    expect(digestOf(fakeGguf(4096, 2))).not.toBe(digestOf(a));
    expect(fakeGguf(4099, 1).length).toBe(4099);
  });
});

describe("anonymous registry", () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(() => registry?.stop());

  it("pushes and pulls a manifest and its blobs", async () => {
    const gguf = fakeGguf(8192, 7);
    const target: PushTarget = { registryUrl: registry.url, repository: "ai/smollm2" };
    const pushed = await pushArtifact(target, "135M-Q4_0", dockerV01({ ggufs: [gguf], licenses: ["MIT"] }));

    const manifest = await getManifest(registry.url, "ai/smollm2", "135M-Q4_0");
    expect(manifest.status).toBe(200);
    expect(manifest.body.equals(pushed.manifest)).toBe(true);
    expect(manifest.headers.get("docker-content-digest")).toBe(pushed.digest);
    expect(sha256(manifest.body)).toBe(pushed.digest);

    const parsed = JSON.parse(manifest.body.toString()) as { config: { mediaType: string }; layers: { mediaType: string; digest: string }[] };
    expect(parsed.config.mediaType).toBe(MEDIA.dockerConfigV01);
    expect(parsed.layers.map((l) => l.mediaType)).toEqual([MEDIA.dockerGguf, MEDIA.dockerLicense]);
    const blob = await fetch(`${registry.url}/v2/ai/smollm2/blobs/${parsed.layers[0]!.digest}`);
    expect(blob.status).toBe(200);
    expect(Buffer.from(await blob.arrayBuffer()).equals(gguf)).toBe(true);

    const tags = (await (await fetch(`${registry.url}/v2/ai/smollm2/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).toEqual(["135M-Q4_0"]);
  });

  it("accepts every artifact format builder and an index", async () => {
    const target: PushTarget = { registryUrl: registry.url, repository: "ai/formats" };
    const shards = [fakeGguf(1000, 1), fakeGguf(1000, 2), fakeGguf(500, 3)];
    const formats = {
      v01: dockerV01({ ggufs: shards, mmproj: fakeGguf(300, 4), chatTemplate: "{{ x }}", annotate: true }),
      v02: dockerV02({ files: [{ path: "model.gguf", data: fakeGguf(600, 5) }, { path: "tokenizer/config.json", data: Buffer.from("{}") }] }),
      modelpack: modelPack({ files: [{ path: "model.gguf", data: fakeGguf(600, 6) }, { path: "LICENSE", data: Buffer.from("MIT") }] }),
      legacy: modelPack({ files: [{ path: "model.gguf", data: fakeGguf(600, 6) }], legacyGgufType: true }),
      prerelease: preRelease({ gguf: fakeGguf(600, 8) }),
    };
    const digests: Record<string, { digest: string; size: number }> = {};
    for (const [tag, artifact] of Object.entries(formats)) {
      const pushed = await pushArtifact(target, tag, artifact);
      digests[tag] = { digest: pushed.digest, size: pushed.manifest.length };
      const got = await getManifest(registry.url, target.repository, tag);
      expect(got.status).toBe(200);
      const manifest = JSON.parse(got.body.toString()) as {
        artifactType?: string;
        config: { mediaType: string; digest: string };
        layers: { digest: string; annotations?: Record<string, string> }[];
      };
      expect(manifest.config.mediaType).toBe(artifact.config.mediaType);
      expect(manifest.artifactType).toBe(artifact.artifactType);
      expect(manifest.layers.map((l) => l.digest)).toEqual(artifact.layers.map((l) => digestOf(l.data)));
      const config = JSON.parse(artifact.config.data.toString()) as { rootfs?: { diff_ids: string[] }; modelfs?: { diffIds: string[] } };
      expect(config.rootfs?.diff_ids ?? config.modelfs?.diffIds).toEqual(manifest.layers.map((l) => l.digest));
    }
    const pushed = JSON.parse((await getManifest(registry.url, target.repository, "v01")).body.toString()) as {
      layers: { annotations: Record<string, string> }[];
    };
    expect(pushed.layers.map((l) => l.annotations[ANNOTATION_FILEPATH])).toEqual(["model-00001-of-00003.gguf", "model-00002-of-00003.gguf", "model-00003-of-00003.gguf", "mmproj-model-f16.gguf", "template.jinja"]);

    const index = await pushIndex(target, "multi", [
      { ...digests.v01!, mediaType: OCI_MANIFEST, platform: { os: "linux", architecture: "amd64" } },
      { ...digests.modelpack!, mediaType: OCI_MANIFEST, artifactType: MEDIA.modelPackArtifact },
    ]);
    const got = await getManifest(registry.url, target.repository, "multi");
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toBe(OCI_INDEX);
    expect(got.headers.get("docker-content-digest")).toBe(index.digest);
  });
});

describe("htpasswd registry", () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry({ auth: { kind: "htpasswd", users: { alice: "s3cret" } } });
  });
  afterAll(() => registry?.stop());

  it("rejects requests without or with wrong credentials and accepts the right ones", async () => {
    const anonymous = await fetch(`${registry.url}/v2/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toBe('Basic realm="test-basic-realm"');
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("alice", "wrong") } })).status).toBe(401);
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("alice", "s3cret") } })).status).toBe(200);

    const target: PushTarget = { registryUrl: registry.url, repository: "team/model", auth: { username: "alice", password: "s3cret" } };
    const pushed = await pushArtifact(target, "v1", dockerV01({ ggufs: [fakeGguf(2048, 9)] }));
    expect((await getManifest(registry.url, "team/model", "v1")).status).toBe(401);
    const ok = await getManifest(registry.url, "team/model", "v1", { authorization: basic("alice", "s3cret") });
    expect(ok.status).toBe(200);
    expect(sha256(ok.body)).toBe(pushed.digest);
  });
});

describe("token registry", () => {
  let tokens: TokenServer;
  let registry: RegistryHandle;
  let digest: string;
  const admin = { username: "admin", password: "admin-pw" };

  beforeAll(async () => {
    tokens = await startTokenServer();
    tokens.setUser(admin.username, admin.password);
    tokens.grant(admin.username, "*", ["*"]);
    tokens.setUser("reader", "reader-pw");
    tokens.grant("reader", "ai/model", ["pull"]);
    registry = await startRegistry({ auth: { kind: "token", tokenServer: tokens } });
    digest = (await pushArtifact({ registryUrl: registry.url, repository: "ai/model", auth: admin }, "latest", dockerV01({ ggufs: [fakeGguf(2048, 10)] }))).digest;
  });
  afterAll(async () => {
    await registry?.stop();
    await tokens?.stop();
  });

  async function fetchToken(scope: string, authorization?: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const url = new URL(tokens.realm);
    url.searchParams.set("service", tokens.service);
    url.searchParams.append("scope", scope);
    const res = await fetch(url, { headers: authorization ? { authorization } : {} });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it("challenges with the token server's realm and service", async () => {
    const ping = await fetch(`${registry.url}/v2/`);
    expect(ping.status).toBe(401);
    expect(ping.headers.get("www-authenticate")).toBe(`Bearer realm="${tokens.realm}",service="${tokens.service}"`);
    const manifest = await getManifest(registry.url, "ai/model", "latest");
    expect(manifest.headers.get("www-authenticate")).toContain('scope="repository:ai/model:pull"');
  });

  it("accepts a token from the token server and rejects one for another repository", async () => {
    const issued = await fetchToken("repository:ai/model:pull", basic("reader", "reader-pw"));
    expect(issued.status).toBe(200);
    expect(issued.body.token).toBe(issued.body.access_token);
    expect(issued.body.expires_in).toBe(300);
    const recorded = tokens.requests.at(-1)!;
    expect(recorded).toMatchObject({ method: "GET", authorization: basic("reader", "reader-pw"), query: { service: "test-registry", scope: "repository:ai/model:pull" } });

    const ok = await getManifest(registry.url, "ai/model", "latest", { authorization: `Bearer ${String(issued.body.token)}` });
    expect(ok.status).toBe(200);
    expect(sha256(ok.body)).toBe(digest);

    const other = tokens.mintToken("reader", [{ type: "repository", name: "ai/other", actions: ["pull"] }]);
    const denied = await getManifest(registry.url, "ai/model", "latest", { authorization: `Bearer ${other}` });
    expect(denied.status).toBe(401);
    expect(denied.headers.get("www-authenticate")).toContain('error="insufficient_scope"');

    // The reader may pull, not push: the token server grants only the intersection.
    const pushScope = await fetchToken("repository:ai/model:pull,push", basic("reader", "reader-pw"));
    const claims = JSON.parse(Buffer.from(String(pushScope.body.token).split(".")[1]!, "base64url").toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ iss: "test-issuer", aud: "test-registry", sub: "reader", access: [{ type: "repository", name: "ai/model", actions: ["pull"] }] });
  });

  it("rejects a wrong password and gives anonymous users only anonymous grants", async () => {
    expect((await fetchToken("repository:ai/model:pull", basic("reader", "nope"))).status).toBe(401);
    const anonymous = await fetchToken("repository:ai/model:pull");
    expect(anonymous.status).toBe(200);
    const denied = await getManifest(registry.url, "ai/model", "latest", { authorization: `Bearer ${String(anonymous.body.token)}` });
    expect(denied.status).toBe(401);
    expect(denied.headers.get("www-authenticate")).toContain('error="insufficient_scope"');

    tokens.grant(null, "ai/public", ["pull"]);
    await pushArtifact({ registryUrl: registry.url, repository: "ai/public", auth: admin }, "latest", dockerV01({ ggufs: [fakeGguf(1024, 11)] }));
    const publicToken = await fetchToken("repository:ai/public:pull");
    expect((await getManifest(registry.url, "ai/public", "latest", { authorization: `Bearer ${String(publicToken.body.token)}` })).status).toBe(200);
  });

  it("rejects an expired token as invalid_token", async () => {
    const expired = tokens.mintToken("reader", [{ type: "repository", name: "ai/model", actions: ["pull"] }], -120);
    const res = await getManifest(registry.url, "ai/model", "latest", { authorization: `Bearer ${expired}` });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"');
  });

  it("serves OAuth2 POST refresh_token grants, and 404 when OAuth is off", async () => {
    tokens.setIdentityToken("idtoken-123", "reader");
    const post = (form: Record<string, string>) =>
      fetch(tokens.realm, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(form).toString() });
    const res = await post({ grant_type: "refresh_token", refresh_token: "idtoken-123", service: tokens.service, client_id: "test", scope: "repository:ai/model:pull" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { access_token: string; scope: string };
    expect(body.scope).toBe("repository:ai/model:pull");
    expect(tokens.requests.at(-1)!.form).toMatchObject({ grant_type: "refresh_token", refresh_token: "idtoken-123" });
    expect((await getManifest(registry.url, "ai/model", "latest", { authorization: `Bearer ${body.access_token}` })).status).toBe(200);

    expect((await post({ grant_type: "refresh_token", refresh_token: "unknown", service: tokens.service })).status).toBe(401);
    tokens.options.oauthPost = false;
    try {
      expect((await post({ grant_type: "refresh_token", refresh_token: "idtoken-123" })).status).toBe(404);
    } finally {
      tokens.options.oauthPost = true;
    }
  });

  it("computes libtrust key IDs like the jwt.md vector", () => {
    const key = createPublicKey({
      key: { kty: "EC", crv: "P-256", x: "m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q", y: "dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc" },
      format: "jwk",
    });
    expect(libtrustKeyId(key)).toBe("PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6");
  });
});

describe("redirect to a CDN", () => {
  let rootDir: string;
  let cdn: Awaited<ReturnType<typeof startCdn>>;
  let registry: RegistryHandle;
  beforeAll(async () => {
    rootDir = await makeTempDir("llama-oci-infra-cdn");
    cdn = await startCdn(rootDir);
    registry = await startRegistry({ rootDir, redirectTo: cdn.url });
  });
  afterAll(async () => {
    await registry?.stop();
    await cdn?.stop();
    await removeDir(rootDir);
  });

  it("answers blob GET and HEAD with 307 to the CDN, which serves ranges without Authorization", async () => {
    const data = fakeGguf(4096, 12);
    const { digest } = await pushBlob({ registryUrl: registry.url, repository: "ai/cdn" }, data);
    const blobUrl = `${registry.url}/v2/ai/cdn/blobs/${digest}`;
    for (const method of ["GET", "HEAD"]) {
      const res = await fetch(blobUrl, { method, redirect: "manual" });
      expect(res.status).toBe(307);
      expect(res.headers.get("location")).toBe(`${cdn.url}/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`);
    }

    const followed = await fetch(blobUrl, { headers: { range: "bytes=10-19", authorization: "Bearer must-not-leak" } });
    expect(followed.status).toBe(206);
    expect(followed.headers.get("content-range")).toBe("bytes 10-19/4096");
    expect(Buffer.from(await followed.arrayBuffer()).equals(data.subarray(10, 20))).toBe(true);
    const seen = cdn.requests.at(-1)!;
    expect(seen.headers.range).toBe("bytes=10-19");
    expect(seen.headers.authorization).toBeUndefined();

    const location = (await fetch(blobUrl, { redirect: "manual" })).headers.get("location")!;
    expect((await fetch(location, { headers: { authorization: "Bearer x" } })).status).toBe(400);
    const tail = await fetch(location, { headers: { range: "bytes=4000-" } });
    expect(tail.headers.get("content-range")).toBe("bytes 4000-4095/4096");
    expect(Buffer.from(await tail.arrayBuffer()).equals(data.subarray(4000))).toBe(true);
    const whole = await fetch(location);
    expect(whole.status).toBe(200);
    expect(sha256(Buffer.from(await whole.arrayBuffer()))).toBe(digest);
  });
});

describe("fault proxy", () => {
  let registry: RegistryHandle;
  let proxy: FaultProxy;
  const data = fakeGguf(256 * 1024, 13);
  let blobPath: string;

  beforeAll(async () => {
    registry = await startRegistry();
    proxy = await startFaultProxy(registry.url);
    // Pushing through the proxy only works if upload Locations are rewritten to the proxy.
    const { digest } = await pushBlob({ registryUrl: proxy.url, repository: "ai/faulty" }, data);
    blobPath = `/v2/ai/faulty/blobs/${digest}`;
  });
  afterAll(async () => {
    await proxy?.stop();
    await registry?.stop();
  });

  it("rewrites upstream Locations to the proxy", async () => {
    const res = await fetch(`${proxy.url}/v2/ai/faulty/blobs/uploads/`, { method: "POST" });
    expect(res.status).toBe(202);
    expect(res.headers.get("location")!.startsWith(`${proxy.url}/v2/ai/faulty/blobs/uploads/`)).toBe(true);
  });

  it("cuts the connection after N body bytes and counts what it sent", async () => {
    proxy.resetStats();
    proxy.addFault({ kind: "cut-after", bytes: 1000, match: (req) => req.path === blobPath });
    const res = await fetch(`${proxy.url}${blobPath}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe(String(data.length));
    await expect(res.arrayBuffer()).rejects.toThrow();
    expect(proxy.bytesByPath.get(blobPath)).toBe(1000);
    expect(proxy.pendingFaults).toHaveLength(0);

    const again = await fetch(`${proxy.url}${blobPath}`, { headers: { range: "bytes=1000-" } });
    expect(again.status).toBe(206);
    expect(Buffer.from(await again.arrayBuffer()).equals(data.subarray(1000))).toBe(true);
    expect(proxy.requests.at(-1)).toMatchObject({ method: "GET", path: blobPath, range: "bytes=1000-", status: 206 });
    expect(proxy.bytesSent).toBe(data.length);
  });

  it("injects a 503 with Retry-After, then passes requests through", async () => {
    proxy.addFault({ kind: "status", status: 503, retryAfter: "1", times: 1 });
    const failed = await fetch(`${proxy.url}${blobPath}`);
    expect(failed.status).toBe(503);
    expect(failed.headers.get("retry-after")).toBe("1");
    await failed.body?.cancel();
    const ok = await fetch(`${proxy.url}${blobPath}`);
    expect(ok.status).toBe(200);
    expect(Buffer.from(await ok.arrayBuffer()).equals(data)).toBe(true);
  });

  it("corrupts one byte and stalls a body", async () => {
    proxy.addFault({ kind: "corrupt", offset: 70_000 });
    const corrupted = Buffer.from(await (await fetch(`${proxy.url}${blobPath}`)).arrayBuffer());
    expect(corrupted.length).toBe(data.length);
    expect(corrupted[70_000]).toBe(data[70_000]! ^ 0xff);
    corrupted[70_000] = data[70_000]!;
    expect(corrupted.equals(data)).toBe(true);

    proxy.addFault({ kind: "stall", afterBytes: 100, ms: 300 });
    const started = Date.now();
    const stalled = Buffer.from(await (await fetch(`${proxy.url}${blobPath}`)).arrayBuffer());
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(stalled.equals(data)).toBe(true);
  });
});

describe("pull-through cache registry", () => {
  it("serves an upstream registry's content", async () => {
    const upstream = await startRegistry();
    try {
      const pushed = await pushArtifact({ registryUrl: upstream.url, repository: "ai/cached" }, "v1", dockerV01({ ggufs: [fakeGguf(1500, 14)] }));
      const cache = await startRegistry({ proxy: { remoteUrl: upstream.url } });
      try {
        const got = await getManifest(cache.url, "ai/cached", "v1");
        expect(got.status).toBe(200);
        expect(sha256(got.body)).toBe(pushed.digest);
      } finally {
        await cache.stop();
      }
    } finally {
      await upstream.stop();
    }
  });
});
