/**
 * Load fuzzing: hundreds of seeded mutants of a tiny valid llama GGUF (test/helpers/gguf-mutator.ts) are loaded with
 * llama.loadModel() and, when they load, asked for a few tokens, in child processes (test/fixtures/fuzz-child.mjs)
 * that report each mutant's outcome before starting the next. Every mutant must either work or fail with a
 * LlamaOciError: a child that dies (a signal, an abort, an exit without a result) is a crash of the mutant it was on,
 * one that stops answering is a hang; the child is then restarted from the next mutant.
 *
 * The seed is fixed, so CI runs the same mutants every time; LLAMA_OCI_FUZZ_SEED and LLAMA_OCI_FUZZ_MUTANTS run
 * others (e.g. LLAMA_OCI_FUZZ_SEED=7 LLAMA_OCI_FUZZ_MUTANTS=5000 npx vitest run test/fuzz-load.test.ts), and
 * LLAMA_OCI_FUZZ_REPORT=<file> writes every mutant's description and outcome there as JSON.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, expect, test } from "vitest";
import { ROOT_DIR } from "./helpers/cli.js";
import { makeMutants, type Mutant } from "./helpers/gguf-mutator.js";
import { makeTinyLlama } from "./helpers/tiny-model.js";
import { writeTinyVocab } from "./helpers/tiny-vocab.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const SEED = Number(process.env.LLAMA_OCI_FUZZ_SEED ?? 1234);
const MUTANTS = Number(process.env.LLAMA_OCI_FUZZ_MUTANTS ?? 2000);
/** A mutant that takes longer than this (load plus three tokens of a 50 KB model) is a hang. */
const MUTANT_TIMEOUT_MS = 20_000;
const CHILD = join(ROOT_DIR, "test", "fixtures", "fuzz-child.mjs");
const DIST = process.env.LLAMA_OCI_FUZZ_DIST ?? join(ROOT_DIR, "dist", "esm");

let dir: string;
let mutants: Mutant[];

beforeAll(async () => {
  dir = await makeTempDir("llama-oci-fuzz");
  // 277 tokens instead of a real vocabulary's 32000: each mutant loads in milliseconds.
  await writeTinyVocab(join(dir, "vocab.gguf"));
  const base = join(dir, "base.gguf");
  await makeTinyLlama(base, { vocabFrom: join(dir, "vocab.gguf"), nLayer: 1, nEmbd: 16, nHead: 2, nHeadKv: 1, nFf: 32, contextLength: 64 });
  mutants = makeMutants(await readFile(base), SEED, MUTANTS);
  await mkdir(join(dir, "mutants"));
  for (const mutant of mutants) await writeFile(join(dir, "mutants", `${mutant.index}.gguf`), mutant.bytes);
});

afterAll(async () => {
  if (dir) await removeDir(dir);
});

interface Outcome {
  done: number;
  load: "ok" | "error";
  generate?: "ok" | "error";
  dispose?: "error";
  code?: string;
  message?: string;
  /** embed() or a chat turn, on some of the mutants that load. */
  extra?: "embed ok" | "chat ok" | "error";
  extraCode?: string;
  extraMessage?: string;
}

interface Failure {
  index: number;
  description: string;
  detail: string;
}

interface FuzzReport {
  outcomes: Map<number, Outcome>;
  crashes: Failure[];
  hangs: Failure[];
  children: number;
}

/** Runs mutants [from, MUTANTS) in one child; resolves with where it stopped and why. */
function runChild(from: number, report: FuzzReport): Promise<number> {
  return new Promise((resolve, reject) => {
    report.children++;
    const child = spawn(process.execPath, [CHILD], {
      env: { ...process.env, LLAMA_OCI_DIST: DIST, FUZZ_DIR: join(dir, "mutants"), FUZZ_FROM: String(from), FUZZ_TO: String(MUTANTS) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let current: number | undefined;
    let hung = false;
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        hung = true;
        child.kill("SIGKILL");
      }, MUTANT_TIMEOUT_MS);
    };
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-2000);
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const message = JSON.parse(line) as { start: number } | Outcome;
      if ("start" in message) {
        current = message.start;
        arm();
      } else {
        report.outcomes.set(message.done, message);
        current = undefined;
      }
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (current === undefined) {
        if (code === 0) return resolve(MUTANTS);
        return reject(new Error(`the fuzz child failed outside any mutant (${signal ?? `exit code ${String(code)}`}): ${stderr}`));
      }
      const failure = { index: current, description: mutants[current]!.description, detail: "" };
      if (hung) {
        report.hangs.push({ ...failure, detail: `no result after ${MUTANT_TIMEOUT_MS} ms` });
      } else {
        report.crashes.push({ ...failure, detail: `${signal ?? `exit code ${String(code)}`}: ${stderr.trim().split("\n").slice(-3).join(" | ")}` });
      }
      resolve(current + 1);
    });
  });
}

test(`${MUTANTS} mutants of a tiny GGUF (seed ${SEED}) each load and generate or fail with a LlamaOciError`, async () => {
  const report: FuzzReport = { outcomes: new Map(), crashes: [], hangs: [], children: 0 };
  const started = performance.now();
  for (let next = 0; next < MUTANTS; ) next = await runChild(next, report);
  const seconds = (performance.now() - started) / 1000;

  const outcomes = [...report.outcomes.values()];
  const loaded = outcomes.filter((o) => o.load === "ok");
  const generated = loaded.filter((o) => o.generate === "ok");
  const errors = new Map<string, number>();
  for (const o of outcomes) if (o.code) errors.set(o.code, (errors.get(o.code) ?? 0) + 1);
  const foreign = outcomes.filter((o) => o.code === "foreign" || o.extraCode === "foreign" || o.dispose === "error");
  const embedded = outcomes.filter((o) => o.extra === "embed ok").length;
  const chatted = outcomes.filter((o) => o.extra === "chat ok").length;
  const byCode = [...errors].sort(([a], [b]) => a.localeCompare(b)).map(([code, n]) => `${code} ${n}`).join(", ");
  console.log(
    [
      `fuzz seed ${SEED}: ${MUTANTS} mutants in ${seconds.toFixed(1)} s (${report.children} child processes)`,
      `  loaded ${loaded.length}, generated ${generated.length}, load errors ${outcomes.length - loaded.length}, generation errors ${loaded.length - generated.length}`,
      `  also embedded ${embedded}, chatted ${chatted}, errors there ${outcomes.filter((o) => o.extra === "error").length}`,
      `  JavaScript errors by code: ${byCode || "none"}`,
      `  crashes ${report.crashes.length}, hangs ${report.hangs.length}`,
      ...[...report.crashes, ...report.hangs].map((f) => `  #${f.index} ${f.description}: ${f.detail}`),
      ...foreign.map((o) => `  #${o.done} ${mutants[o.done]!.description}: not a LlamaOciError: ${o.message ?? o.extraMessage ?? ""}`),
    ].join("\n"),
  );

  if (process.env.LLAMA_OCI_FUZZ_REPORT) {
    const all = mutants.map((m) => ({ index: m.index, description: m.description, ...report.outcomes.get(m.index) }));
    await writeFile(process.env.LLAMA_OCI_FUZZ_REPORT, JSON.stringify({ seed: SEED, crashes: report.crashes, hangs: report.hangs, mutants: all }, null, 1));
  }

  expect(report.crashes).toEqual([]);
  expect(report.hangs).toEqual([]);
  expect(foreign.map((o) => `#${o.done} ${o.message ?? o.extraMessage ?? ""}`)).toEqual([]);
  expect(report.outcomes.size).toBe(MUTANTS);
  // The mutations are meant to hit both sides: plenty of refused files, and some that still work.
  expect(generated.length).toBeGreaterThan(MUTANTS / 20);
  expect(outcomes.length - loaded.length).toBeGreaterThan(MUTANTS / 3);
}, 180_000);
