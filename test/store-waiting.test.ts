// A pull that finds another process downloading the same blob says so ("<id>: Waiting for another download", on a
// terminal and off it), can be interrupted while it waits (Ctrl+C: exit 130, the other download unharmed), and
// once the other download is done finds the blob in the cache without fetching it again.
import { spawn } from "node:child_process";
import { Writable } from "node:stream";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createProgressRenderer } from "../src/cli/progress-renderer.js";
import type { ProgressEvent } from "../src/oci/progress.js";
import { dockerV01, fakeGguf } from "./helpers/artifacts.js";
import { CLI_PATH, cliEnv, describeRun, lines, spawnCli, type CliProcess } from "./helpers/cli.js";
import { hasScript, shellQuote } from "./helpers/pty.js";
import { digestOf, pushArtifact } from "./helpers/push.js";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { startSlowProxy, type SlowProxy } from "./helpers/slow-proxy.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const D = "sha256:1234567890ab" + "e".repeat(52);

class Capture extends Writable {
  text = "";
  constructor(readonly isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}

function render(isTTY: boolean, events: ProgressEvent[]): string {
  const stream = new Capture(isTTY);
  const renderer = createProgressRenderer({ stream, env: {}, noColor: true, now: () => 0 });
  for (const event of events) renderer.onProgress(event);
  renderer.close();
  return stream.text;
}

describe("the renderer", () => {
  const events: ProgressEvent[] = [
    { type: "layer-waiting", digest: D, size: 5e6, filename: "model.gguf" },
    { type: "layer-done", digest: D, size: 5e6, fromCache: true },
  ];

  test("without a terminal: a line when the wait begins, then the usual end", () => {
    expect(lines(render(false, events))).toEqual(["1234567890ab: Waiting for another download", "1234567890ab: Already exists"]);
  });

  test("on a terminal: the layer's line says it waits, then is redrawn in place", () => {
    const raw = render(true, events);
    expect(raw).toContain("\r\x1b[2K1234567890ab: Waiting for another download\n");
    expect(raw).toContain("\x1b[1A\r\x1b[2K1234567890ab: Already exists\n");
  });
});

let registry: RegistryHandle;
let proxy: SlowProxy;
let workDir: string;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startSlowProxy(registry.url);
  workDir = await makeTempDir("llama-oci-store-waiting");
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await removeDir(workDir);
});

/** A CLI under a pseudo-terminal (util-linux `script`), whose output can be read while it runs. */
function spawnInPty(argv: string[], env: NodeJS.ProcessEnv): { output: () => string; exited: Promise<number | null> } {
  const child = spawn("script", ["-qfec", `stty cols 160 rows 40; exec ${argv.map(shellQuote).join(" ")}`, "/dev/null"], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const exited = new Promise<number | null>((resolve) =>
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve(code);
    }),
  );
  return { output: () => text, exited };
}

async function until(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

test.skipIf(!hasScript())(
  "pulls waiting for another process's download say so on and off a terminal, and Ctrl+C ends the wait",
  { timeout: 90_000 },
  async () => {
    const gguf = fakeGguf(4 * 1024 * 1024, 404);
    const digest = digestOf(gguf);
    const short = digest.slice(7, 19);
    await pushArtifact({ registryUrl: registry.url, repository: "ai/waiting" }, "v1", dockerV01({ ggufs: [gguf] }));
    const env = cliEnv(join(workDir, "home"), join(workDir, "cache"));
    const reference = `${proxy.host}/ai/waiting:v1`;
    const blobPath = `/v2/ai/waiting/blobs/${digest}`;

    // The first pull's download stops half-way, holding the blob's lock, until release().
    proxy.hold(blobPath, 2 * 1024 * 1024);
    const first = spawnCli(["pull", reference], { env, timeoutMs: 60_000 });
    await proxy.held();

    const waiting = `${short}: Waiting for another download`;
    const second: CliProcess = spawnCli(["pull", reference], { env, timeoutMs: 60_000 });
    await until("the second pull to say it waits", () => lines(second.output().stderr).includes(waiting));
    const onTerminal = spawnInPty([process.execPath, CLI_PATH, "pull", reference], env);
    await until("the pull on a terminal to say it waits", () => onTerminal.output().includes(waiting));

    // Ctrl+C while waiting: it stops at once, and the download it waited for goes on.
    const interruptedAt = Date.now();
    second.child.kill("SIGINT");
    const stopped = await second.result;
    expect(stopped.exitCode, describeRun(stopped)).toBe(130);
    expect(Date.now() - interruptedAt).toBeLessThan(3_000);
    expect(stopped.stderr).toContain("interrupted");

    proxy.release();
    const done = await first.result;
    expect(done.exitCode, describeRun(done)).toBe(0);
    expect(lines(done.stderr)).toContain(`${short}: Download complete`);
    expect(await onTerminal.exited, onTerminal.output()).toBe(0);
    expect(onTerminal.output()).toContain(`${short}: Already exists`);

    // Only the first pull fetched the blob.
    expect(proxy.requests.filter((r) => r.method === "GET" && r.path === blobPath)).toHaveLength(1);
  },
);
