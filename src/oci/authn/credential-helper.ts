/**
 * The docker-credential-helpers protocol, `get` only: run `docker-credential-<suffix> get`, send the server URL
 * on stdin (no newline), read {"ServerURL","Username","Secret"} from stdout. Helpers report errors on stdout and
 * exit 1; "credentials not found in native keychain" means there is simply nothing stored.
 */
import { spawn } from "node:child_process";
import { abortError, LlamaOciError } from "../../errors.js";

const NOT_FOUND = "credentials not found in native keychain";
const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_OUTPUT_BYTES = 1 << 20;

export interface CredentialHelperOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export async function runCredentialHelper(
  helperSuffix: string,
  serverUrl: string,
  options: CredentialHelperOptions = {},
): Promise<{ username: string; secret: string } | null> {
  const program = `docker-credential-${helperSuffix}`;
  if (helperSuffix === "" || /[\\/]/.test(helperSuffix)) {
    throw new LlamaOciError("CREDENTIALS", `invalid credential helper name "${program}"`, {
      hint: 'a helper is named by its suffix, e.g. "desktop" or "pass"',
    });
  }
  const { stdout, stderr, code, signal } = await runGet(program, serverUrl, options);
  if (code === 0) return parseAnswer(program, stdout);

  const message = stdout.trim() || stderr.trim();
  if (stdout.trim() === NOT_FOUND) return null;
  const status = signal ? `was killed by ${signal}` : `exited with code ${code ?? "unknown"}`;
  throw new LlamaOciError("CREDENTIALS", `credential helper ${program} ${status}${describeOutput(message)}`);
}

interface Exit {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function runGet(program: string, serverUrl: string, options: CredentialHelperOptions): Promise<Exit> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const abortSignal = options.signal;
  if (abortSignal?.aborted) return Promise.reject(abortError(abortSignal));

  return new Promise<Exit>((resolve, reject) => {
    // The PATH in options.env is the one searched for the program.
    const child = spawn(program, ["get"], {
      env: options.env ?? process.env,
      shell: false,
      stdio: ["pipe", "pipe", "pipe"],
      windowsHide: true,
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let outputBytes = 0;
    let settled = false;

    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      abortSignal?.removeEventListener("abort", onAbort);
      outcome();
    };
    // On timeout or abort the child is killed and the promise settles at once: a grandchild the helper left
    // behind may keep the pipes open, and nothing it writes matters any more.
    const stop = (error: LlamaOciError): void => {
      finish(() => {
        child.kill("SIGKILL");
        child.stdout.destroy();
        child.stderr.destroy();
        reject(error);
      });
    };
    const onAbort = (): void => stop(abortError(abortSignal));
    const timer = setTimeout(() => {
      stop(
        new LlamaOciError("CREDENTIALS", `credential helper ${program} did not answer within ${formatMs(timeoutMs)}`, {
          hint: "it may be waiting for a passphrase or an unlocked keyring; unlock it and try again",
        }),
      );
    }, timeoutMs);
    abortSignal?.addEventListener("abort", onAbort, { once: true });

    const collect = (chunks: Buffer[]) => (chunk: Buffer) => {
      outputBytes += chunk.length;
      if (outputBytes > MAX_OUTPUT_BYTES) {
        stop(new LlamaOciError("CREDENTIALS", `credential helper ${program} wrote more than ${MAX_OUTPUT_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    child.stdout.on("data", collect(stdout));
    child.stderr.on("data", collect(stderr));

    child.on("error", (error: NodeJS.ErrnoException) => {
      finish(() => reject(spawnError(program, error)));
    });
    child.on("close", (code, signal) => {
      finish(() =>
        resolve({
          stdout: Buffer.concat(stdout).toString("utf8"),
          stderr: Buffer.concat(stderr).toString("utf8"),
          code,
          signal,
        }),
      );
    });

    // A helper that exits without reading stdin makes this write fail with EPIPE; its exit status tells the story.
    child.stdin.on("error", () => {});
    child.stdin.end(serverUrl);
  });
}

function parseAnswer(program: string, stdout: string): { username: string; secret: string } {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    // Not quoted: the output of a helper may hold the secret.
    throw new LlamaOciError("CREDENTIALS", `credential helper ${program} printed something that is not JSON`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new LlamaOciError("CREDENTIALS", `credential helper ${program} did not print a JSON object`);
  }
  const { Username, Secret } = json as Record<string, unknown>;
  if ((Username !== undefined && typeof Username !== "string") || (Secret !== undefined && typeof Secret !== "string")) {
    throw new LlamaOciError("CREDENTIALS", `credential helper ${program} printed a Username or Secret that is not a string`);
  }
  return { username: Username ?? "", secret: Secret ?? "" };
}

function spawnError(program: string, error: NodeJS.ErrnoException): LlamaOciError {
  if (error.code === "ENOENT") {
    return new LlamaOciError("CREDENTIALS", `credential helper ${program} is not installed (not found on PATH)`, {
      hint: `install ${program} or remove it from your Docker config.json`,
      cause: error,
    });
  }
  if (error.code === "EACCES") {
    return new LlamaOciError("CREDENTIALS", `credential helper ${program} cannot be run (permission denied)`, {
      hint: `make ${program} executable`,
      cause: error,
    });
  }
  return new LlamaOciError("CREDENTIALS", `credential helper ${program} could not be started (${error.code ?? error.message})`, {
    cause: error,
  });
}

/** The helper's own error message, first line only; output that looks like JSON is withheld as it may hold a secret. */
function describeOutput(message: string): string {
  const firstLine = message.split(/\r?\n/, 1)[0]!.trim();
  if (firstLine === "" || firstLine.startsWith("{")) return "";
  return `: ${firstLine.length > 200 ? `${firstLine.slice(0, 200)}...` : firstLine}`;
}

function formatMs(ms: number): string {
  return ms >= 1000 && ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
