// `llama-oci serve` as a command: its help, usage errors (exit 2), a --model that cannot be loaded (exit 1, one
// error line), and a clean stop on SIGTERM while a response is streaming (exit 0).
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { describeRun, lines, runCli } from "./helpers/cli.js";
import { SERVE_CHAT_TEMPLATE, serveEnv, startServe } from "./helpers/serve.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./helpers/tiny-model.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let workDir: string;
let path: string;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-cli");
  path = join(workDir, "tiny.gguf");
  await makeTinyLlama(path, { vocabFrom: DEFAULT_TINY_VOCAB, seed: 61, chatTemplate: SERVE_CHAT_TEMPLATE, contextLength: 512 });
});

afterAll(async () => {
  if (workDir) await removeDir(workDir);
});

describe("llama-oci serve", () => {
  test("--help lists the options; the top-level usage lists the command", async () => {
    const help = await runCli(["serve", "--help"], { env: serveEnv(workDir) });
    expect(help.exitCode, describeRun(help)).toBe(0);
    for (const flag of ["--host", "--port", "--model", "--parallel", "--max-models", "--keep-alive", "--max-queue", "--pull", "--api-key", "--cors", "--ctx-size", "--registry-mirror"]) {
      expect(help.stdout).toContain(flag);
    }
    expect((await runCli(["--help"], { env: serveEnv(workDir) })).stdout).toMatch(/^ {2}serve {2,}/m);
  });

  test("usage errors exit 2 with one error line", async () => {
    for (const args of [["--pull", "sometimes"], ["--port", "99999"], ["--parallel", "0"], ["--keep-alive", "soon"], ["--bogus"]]) {
      const run = await runCli(["serve", ...args], { env: serveEnv(workDir) });
      expect(run.exitCode, `${args.join(" ")}\n${describeRun(run)}`).toBe(2);
      expect(lines(run.stderr).filter((l) => l.startsWith("error:")), describeRun(run)).toHaveLength(1);
    }
  });

  test("a --model that cannot be loaded stops the server: exit 1 and the reason", async () => {
    const notCached = await runCli(["serve", "--port", "0", "--pull", "never", "--model", "127.0.0.1:9/ai/none:v1"], { env: serveEnv(workDir) });
    expect(notCached.exitCode, describeRun(notCached)).toBe(1);
    expect(notCached.stderr).toMatch(/^error: model 127\.0\.0\.1:9\/ai\/none:v1 is not in the cache, and this server does not pull models \(--pull never\)$/m);
    const missingFile = await runCli(["serve", "--port", "0", "--model", join(workDir, "missing.gguf")], { env: serveEnv(workDir) });
    expect(missingFile.exitCode, describeRun(missingFile)).toBe(1);
    expect(missingFile.stderr).toMatch(/^error: model file not found: .*missing\.gguf$/m);
  });

  test("SIGTERM stops a serving process cleanly, a stream running: exit 0", async () => {
    const server = await startServe(["--model", path, "-c", "8192"], serveEnv(workDir), { waitReady: true });
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 100_000, temperature: 0, stream: true }),
    });
    const reader = response.body!.getReader();
    await reader.read();
    const started = Date.now();
    expect(await server.stop()).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(server.logs()).toMatch(/shutting down/);
    // The stream ended rather than hanging.
    for (;;) {
      const chunk = await reader.read().catch(() => ({ done: true }));
      if (chunk.done) break;
    }
  });
});
