/**
 * `llama-oci serve` as a user runs it: bin/llama-oci.js as a child process on 127.0.0.1 with an OS-chosen port
 * (--port 0; the URL comes from its "listening on" line), HOME and LLAMA_CACHE in temp dirs; and tiny generated
 * models pushed to a test registry for it to pull.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { llama, type LlamaModel } from "../../src/index.js";
import { dockerV01 } from "./artifacts.js";
import { cliEnv, spawnCli, type CliProcess } from "./cli.js";
import { pushArtifact } from "./push.js";
import type { RegistryHandle } from "./registry.js";
import { DEFAULT_TINY_VOCAB, makeTinyLlama } from "./tiny-model.js";

/** A template in the style of Zephyr's, small enough to read in a failure message. */
export const SERVE_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

export interface ServeProcess {
  url: string;
  process: CliProcess;
  /** Everything it printed on stderr so far. */
  logs(): string;
  /** Waits until a line of the log matches (default 20 s). */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** SIGTERM, then SIGKILL after 10 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `llama-oci serve --port 0 <args>` and resolves once it listens. `env` is the child's whole environment
 * (use cliEnv). Threads default to 1 (-t 1) so that several servers fit the machine.
 */
export async function startServe(args: string[], env: NodeJS.ProcessEnv, options: { waitReady?: boolean } = {}): Promise<ServeProcess> {
  const argv = ["serve", "--port", "0", ...(args.includes("-t") ? [] : ["-t", "1"]), ...args];
  const child = spawnCli(argv, { env, timeoutMs: 600_000 });
  const logs = () => child.output().stderr;
  const waitForLog = async (pattern: RegExp, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(logs())) {
      if (child.child.exitCode !== null || child.child.signalCode !== null) {
        throw new Error(`llama-oci serve exited (${child.child.exitCode ?? child.child.signalCode ?? "?"}) before logging ${String(pattern)}:\n${logs()}`);
      }
      if (Date.now() > deadline) throw new Error(`llama-oci serve did not log ${String(pattern)} within ${timeoutMs} ms:\n${logs()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  await waitForLog(/listening on http:\/\/\S+/);
  const url = /listening on (http:\/\/[^\s]+)/.exec(logs())![1]!;
  if (options.waitReady) await waitForLog(/^ready: /m, 60_000);
  return {
    url,
    process: child,
    logs,
    waitForLog,
    stop: async () => {
      if (child.child.exitCode === null && child.child.signalCode === null) {
        child.child.kill("SIGTERM");
        const timer = setTimeout(() => child.child.kill("SIGKILL"), 10_000);
        const result = await child.result;
        clearTimeout(timer);
        return result.exitCode;
      }
      return (await child.result).exitCode;
    },
  };
}

let envCount = 0;

/** A fresh HOME and cache under `workDir` for one server. */
export function serveEnv(workDir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const base = join(workDir, `serve-${++envCount}`);
  return cliEnv(join(base, "home"), join(base, "cache"), extra);
}

export interface PushedModel {
  /** The GGUF on disk, for computing expected output in the test process. */
  path: string;
  /** The reference a client sends, e.g. "127.0.0.1:5000/ai/tiny-serve:F32". */
  reference: string;
}

/** Generates a tiny llama with a chat template and pushes it to `registry` as `<repository>:F32`. */
export async function pushTinyModel(registry: RegistryHandle, workDir: string, repository: string, seed: number, contextLength = 512): Promise<PushedModel> {
  const path = join(workDir, `${repository.replace(/\W+/g, "-")}.gguf`);
  await makeTinyLlama(path, { vocabFrom: DEFAULT_TINY_VOCAB, seed, chatTemplate: SERVE_CHAT_TEMPLATE, contextLength });
  await pushArtifact({ registryUrl: registry.url, repository }, "F32", dockerV01({ ggufs: [await readFile(path)] }));
  return { path, reference: `${registry.host}/${repository}:F32` };
}

/** The greedy answer of the model alone on a fresh context, as the server computes it: chat template, tokens, generation. */
export async function expectedChat(model: LlamaModel, messages: { role: string; content: string }[], maxTokens: number): Promise<string> {
  const context = await model.createContext({ contextSize: 512 });
  try {
    const text = model.applyChatTemplate(messages, { addAssistantPrompt: true });
    const tokens = await model.tokenize(text, { addSpecial: true, parseSpecial: true });
    return (await context.completeWithMeta(tokens, { temperature: 0, maxTokens })).text;
  } finally {
    await context.dispose();
  }
}

export async function loadForExpectations(path: string): Promise<LlamaModel> {
  return llama.loadModel(path, { gpuLayers: 0, contextSize: 512, threads: 1 });
}

/** Reads one Prometheus sample (the sum over label sets that contain `labels`) from /metrics text. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelText = /\{([^}]*)\}/.exec(line)?.[1] ?? "";
    if (!Object.entries(labels).every(([key, value]) => labelText.includes(`${key}="${value}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}
