/**
 * Runs the built llama-oci CLI (bin/llama-oci.js, which loads dist/) as a child process and captures what a user
 * would see: stdout, stderr, exit code or signal. Children get an environment built from scratch (see cliEnv), so
 * the developer's Docker credentials, proxies and caches never leak into a test.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI_PATH = join(ROOT_DIR, "bin", "llama-oci.js");

export interface CliResult {
  stdout: string;
  stderr: string;
  /** null when the process was ended by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
}

export interface CliOptions {
  /** Default process.env; tests pass cliEnv(...) instead. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** SIGKILL the child after this long (default 30 s); the result then has timedOut set. */
  timeoutMs?: number;
}

export interface CliProcess {
  child: ChildProcess;
  pid: number;
  /** stdout and stderr received so far. */
  output(): { stdout: string; stderr: string };
  result: Promise<CliResult>;
}

/**
 * HOME and LLAMA_CACHE as given, PATH from this process, and nothing else unless `extra` adds it (undefined values
 * are dropped, so `{ HTTP_PROXY: undefined }` just leaves it out).
 */
export function cliEnv(home: string, cacheDir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    LLAMA_CACHE: cacheDir,
    XDG_CONFIG_HOME: join(home, ".config"),
    LANG: "C.UTF-8",
  };
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

export function spawnCli(args: string[], options: CliOptions = {}): CliProcess {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    cwd: options.cwd ?? ROOT_DIR,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, options.timeoutMs ?? 30_000);
  const result = new Promise<CliResult>((resolve, reject) => {
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("close", (exitCode, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, exitCode, signal, timedOut, durationMs: Date.now() - started });
    });
  });
  if (child.pid === undefined) throw new Error(`could not start ${process.execPath} ${CLI_PATH}`);
  return { child, pid: child.pid, output: () => ({ stdout, stderr }), result };
}

export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return spawnCli(args, options).result;
}

/** The lines of a stream's text, without the empty string after the final newline. */
export function lines(text: string): string[] {
  const all = text.split(/\r?\n/);
  if (all.at(-1) === "") all.pop();
  return all;
}

/** For assertion messages: everything the child printed. */
export function describeRun(result: CliResult): string {
  return `exit ${result.exitCode ?? result.signal ?? "?"}${result.timedOut ? " (timed out)" : ""}\n--- stdout\n${result.stdout}--- stderr\n${result.stderr}`;
}
