#!/usr/bin/env node
// `npm run demo`: the whole path offline. Starts a local registry, generates a small llama model (random weights,
// llama.cpp's real SentencePiece vocab, so the output is word pieces rather than text), pushes it as a Docker model
// artifact, then `llama-oci run <reference>` pulls it into a temporary cache and streams a completion. Everything
// it creates lives in a temp dir that is removed at the end.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { missingRegistryMessage, pushGgufModel, registryAvailable, startLocalRegistry } from "./local-registry.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const PROMPT = "Once upon a time";
const REPOSITORY = "demo/tiny-llama";

const label = process.stderr.isTTY ? "\x1b[1mdemo:\x1b[0m" : "demo:";

function say(message) {
  process.stderr.write(`${label} ${message}\n`);
}

function fail(message) {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(1);
}

if (!registryAvailable()) fail(missingRegistryMessage);
if (!existsSync(join(root, "dist", "esm", "testing", "tiny-llama.js"))) {
  say("compiling the TypeScript (npm run build)");
  execFileSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" });
}
const { makeTinyLlama, DEFAULT_TINY_VOCAB } = await import("../dist/esm/testing/tiny-llama.js");
if (!existsSync(DEFAULT_TINY_VOCAB)) fail(`llama.cpp's vocab files are missing (${DEFAULT_TINY_VOCAB}): run 'npm install' first`);

const work = mkdtempSync(join(tmpdir(), "llama-oci-demo-"));
let registry;
let exitCode = 1;
try {
  const modelPath = join(work, "tiny-llama.gguf");
  const started = Date.now();
  await makeTinyLlama(modelPath, {
    seed: 2024,
    nLayer: 4,
    nEmbd: 256,
    nHead: 8,
    nHeadKv: 4,
    nFf: 768,
    contextLength: 2048,
    tensorType: "f16",
    tieEmbeddings: true,
    name: "tiny-llama demo (random weights)",
  });
  say(`generated a 4-layer llama with random weights and llama.cpp's 32000-token vocab in ${Date.now() - started} ms`);

  registry = await startLocalRegistry();
  await pushGgufModel(registry.url, REPOSITORY, "latest", modelPath, { quantization: "F16", parameters: "11M" });
  const reference = `${registry.host}/${REPOSITORY}:latest`;
  say(`started docker-registry on ${registry.url} and pushed ${reference}`);

  const cache = join(work, "cache");
  const args = ["run", reference, "-p", PROMPT, "-n", "32", "--temp", "0.7", "--seed", "7"];
  say(`LLAMA_CACHE=${cache} llama-oci ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")}\n`);
  exitCode = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, "bin", "llama-oci.js"), ...args], {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, LLAMA_CACHE: cache },
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => resolve(code ?? (signal === "SIGINT" ? 130 : 1)));
  });
  if (exitCode === 0) say("done: the model was pulled by reference from the registry and ran in-process. Cleaning up.");
  else say(`llama-oci run exited with code ${exitCode}`);
} catch (error) {
  process.stderr.write(`demo: ${error instanceof Error ? error.message : String(error)}\n`);
} finally {
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(exitCode);
