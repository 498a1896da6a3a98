/**
 * The oracle of the image and audio tests: llama.cpp's own llama-mtmd-cli (same pinned source), greedy, one thread,
 * with its media before the prompt; its answer is what follows its response marker.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "vitest";
import { ROOT_DIR } from "./cli.js";

const run = promisify(execFile);
export const MTMD_CLI = join(ROOT_DIR, "build", "bin", "llama-mtmd-cli");
/** Printed by llama-mtmd-cli before the answer (its MTMD_TEST_RESPONSE_MARKER, which tools/mtmd/tests.sh uses). */
const MARKER = "<<<llama-oci response>>>";

export interface MtmdCliRun {
  model: string;
  projector: string;
  /** The media arguments, in order (["--image", path] or ["--audio", path], repeated). */
  media: string[];
  prompt: string;
  nPredict: number;
  contextSize: number;
}

/** llama-mtmd-cli's greedy answer, without its closing newlines. */
export async function mtmdCliAnswer(options: MtmdCliRun): Promise<string> {
  const args = ["-m", options.model, "--mmproj", options.projector, ...options.media, "-p", options.prompt, "--temp", "0"];
  args.push("-n", String(options.nPredict), "-c", String(options.contextSize), "-t", "1", "--no-warmup");
  const { stdout } = await run(MTMD_CLI, args, { maxBuffer: 1 << 20, env: { ...process.env, MTMD_TEST_RESPONSE_MARKER: MARKER } });
  const at = stdout.lastIndexOf(MARKER);
  expect(at, `llama-mtmd-cli printed no response marker: ${stdout.slice(-500)}`).toBeGreaterThanOrEqual(0);
  // The marker's line, and the line eval_message() ends the prompt with; the answer; then its closing newlines.
  const head = `${MARKER}\n\n`;
  expect(stdout.slice(at, at + head.length)).toBe(head);
  return stdout.slice(at + head.length).replace(/\n+$/, "");
}
