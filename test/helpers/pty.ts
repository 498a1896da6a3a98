/**
 * Runs a command under a real pseudo-terminal with util-linux `script`, so that the child sees isTTY === true on
 * stdout and stderr, and returns everything it wrote to the terminal as raw text (escape codes included).
 */
import { spawn, spawnSync } from "node:child_process";

export interface PtyResult {
  /** What the terminal received; the pty turns "\n" into "\r\n". */
  output: string;
  exitCode: number | null;
  timedOut: boolean;
}

export interface PtyOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  columns?: number;
  rows?: number;
}

export function hasScript(): boolean {
  const probe = spawnSync("script", ["--version"], { encoding: "utf8" });
  return probe.status === 0 && /util-linux/.test(`${probe.stdout}${probe.stderr}`);
}

export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** argv is quoted for the shell; the terminal gets the given size first (a pty made by `script` without a
 * terminal on stdin has none). */
export function runInPty(argv: string[], options: PtyOptions = {}): Promise<PtyResult> {
  const columns = options.columns ?? 120;
  const rows = options.rows ?? 40;
  const command = `stty cols ${columns} rows ${rows}; exec ${argv.map(shellQuote).join(" ")}`;
  const child = spawn("script", ["-qfec", command, "/dev/null"], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const chunks: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
  child.stderr.on("data", (chunk: Buffer) => chunks.push(chunk));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    // script runs the command in its own session; killing our process group reaches script itself.
    if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
  }, options.timeoutMs ?? 10_000);
  return new Promise((resolve, reject) => {
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ output: Buffer.concat(chunks).toString("utf8"), exitCode: code, timedOut });
    });
  });
}
