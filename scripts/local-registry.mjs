// A throwaway registry for `npm run demo`, scripts/pack-test.mjs and bench/inference: Debian's docker-registry
// (distribution 2.x) on 127.0.0.1 with temporary storage, and a push of a GGUF as a Docker model artifact (v0.1:
// one application/vnd.docker.ai.gguf.v3 layer) over plain fetch, independent of the library under test.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

export const REGISTRY_BINARY = process.env.LLAMA_OCI_TEST_REGISTRY ?? "docker-registry";

/** Whether the registry binary can be found; the scripts print `missingRegistryMessage` when not. */
export function registryAvailable() {
  try {
    execFileSync("sh", ["-c", `command -v "$0"`, REGISTRY_BINARY], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export const missingRegistryMessage =
  `${REGISTRY_BINARY} is not installed: it runs the local OCI registry. ` +
  "Install it with 'bash scripts/setup.sh' (Debian/Ubuntu: apt-get install docker-registry), or set LLAMA_OCI_TEST_REGISTRY to its path.";

/**
 * Starts a registry on a free loopback port with its storage in a new temp dir (removed by stop()).
 * Returns { url: "http://127.0.0.1:PORT", host: "127.0.0.1:PORT", stop }.
 */
export async function startLocalRegistry() {
  const dir = mkdtempSync(join(tmpdir(), "llama-oci-registry-"));
  const port = await freePort();
  const configPath = join(dir, "config.yml");
  // JSON is valid YAML and spares quoting paths.
  writeFileSync(
    configPath,
    JSON.stringify({
      version: 0.1,
      log: { level: "error", accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: join(dir, "storage") }, maintenance: { uploadpurging: { enabled: false } } },
      http: { addr: `127.0.0.1:${port}`, secret: "local-only" },
    }),
  );
  let output = "";
  const child = spawn(REGISTRY_BINARY, ["serve", configPath], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.on("data", (chunk) => (output = (output + chunk).slice(-8192)));
  child.stderr.on("data", (chunk) => (output = (output + chunk).slice(-8192)));
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    process.off("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 3000))]);
      child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForRegistry(url, child, () => output);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, host: `127.0.0.1:${port}`, stop };
}

/**
 * Pushes `ggufPath` as `<repository>:<tag>` in the Docker model-artifact layout that `docker model push` wrote
 * before v0.2 (what Docker Hub's ai/ models use). Returns the manifest digest.
 */
export async function pushGgufModel(registryUrl, repository, tag, ggufPath, { quantization = "unknown", parameters = "unknown" } = {}) {
  const gguf = readFileSync(ggufPath);
  const ggufDigest = sha256(gguf);
  const config = Buffer.from(
    JSON.stringify({
      config: { format: "gguf", quantization, parameters, architecture: "llama", size: `${gguf.length} B` },
      descriptor: { created: new Date().toISOString() },
      rootfs: { type: "rootfs", diff_ids: [ggufDigest] },
    }),
  );
  await pushBlob(registryUrl, repository, gguf, ggufDigest);
  const configDigest = sha256(config);
  await pushBlob(registryUrl, repository, config, configDigest);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.docker.ai.model.config.v0.1+json", digest: configDigest, size: config.length },
      layers: [
        {
          mediaType: "application/vnd.docker.ai.gguf.v3",
          digest: ggufDigest,
          size: gguf.length,
          annotations: { "org.cncf.model.filepath": basename(ggufPath) },
        },
      ],
    }),
  );
  const res = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  });
  if (res.status !== 201) throw new Error(`manifest push to ${repository}:${tag} answered ${res.status}: ${await res.text()}`);
  return sha256(manifest);
}

async function pushBlob(registryUrl, repository, data, digest) {
  const head = await fetch(`${registryUrl}/v2/${repository}/blobs/${digest}`, { method: "HEAD" });
  if (head.status === 200) return;
  const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  if (start.status !== 202) throw new Error(`blob upload start answered ${start.status}: ${await start.text()}`);
  const location = new URL(start.headers.get("location"), registryUrl);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, { method: "PUT", headers: { "content-type": "application/octet-stream" }, body: data });
  if (put.status !== 201) throw new Error(`blob upload answered ${put.status}: ${await put.text()}`);
}

function sha256(data) {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitForRegistry(url, child, output) {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${REGISTRY_BINARY} exited with code ${child.exitCode}: ${output().trim()}`);
    try {
      const res = await fetch(`${url}/v2/`);
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${REGISTRY_BINARY} did not answer on ${url} within 15 s: ${output().trim()}`);
}
