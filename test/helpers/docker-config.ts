/**
 * Credential sources for tests, kept in a temp "sandbox" and handed to pull() through options.env only: a HOME
 * with ~/.docker/config.json, podman auth.json files, and real docker-credential-<name> helper scripts on a PATH
 * of their own that log every call (argument and stdin) so tests can check what the client sent them.
 */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/** The `auth` field of a config.json entry: base64 of user:password. */
export function authField(username: string, password: string): string {
  return Buffer.from(`${username}:${password}`, "utf8").toString("base64");
}

/** The Authorization header a Basic client sends for these credentials. */
export function basicHeader(username: string, password: string): string {
  return `Basic ${authField(username, password)}`;
}

export async function writeJsonFile(path: string, value: unknown): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(value, null, 2));
  return path;
}

export interface HelperCall {
  /** The helper's argument, e.g. "get". */
  action: string;
  /** What the client wrote on stdin (the server URL for `get`). */
  stdin: string;
}

export interface CredentialHelper {
  /** docker-credential-<suffix> */
  program: string;
  path: string;
  /** Every call so far, oldest first. */
  calls(): Promise<HelperCall[]>;
}

/** What a helper does on `get`: answer credentials (exit 0), or print a message on stdout and exit non-zero. */
export type HelperBehaviour = { username: string; secret: string } | { exitCode: number; stdout: string };

export interface AuthSandbox {
  home: string;
  binDir: string;
  /** The environment for pull(): HOME and PATH (the helper dir first, then the system's for sh and cat), plus extra. */
  env(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  /** Writes $HOME/.docker/config.json. */
  writeDockerConfig(config: unknown): Promise<string>;
  /** Writes docker-credential-<suffix> into binDir. */
  writeHelper(suffix: string, behaviour: HelperBehaviour): Promise<CredentialHelper>;
}

export async function makeAuthSandbox(dir: string): Promise<AuthSandbox> {
  const home = join(dir, "home");
  const binDir = join(dir, "bin");
  await mkdir(home, { recursive: true });
  await mkdir(binDir, { recursive: true });
  return {
    home,
    binDir,
    env: (extra = {}) => ({ HOME: home, PATH: `${binDir}:/usr/bin:/bin`, ...extra }),
    writeDockerConfig: (config) => writeJsonFile(join(home, ".docker", "config.json"), config),
    writeHelper: (suffix, behaviour) => writeCredentialHelper(binDir, suffix, behaviour),
  };
}

export async function writeCredentialHelper(binDir: string, suffix: string, behaviour: HelperBehaviour): Promise<CredentialHelper> {
  const program = `docker-credential-${suffix}`;
  const path = join(binDir, program);
  const log = join(binDir, `${program}.calls`);
  const answer =
    "username" in behaviour
      ? `printf '%s' ${shellQuote(JSON.stringify({ ServerURL: "", Username: behaviour.username, Secret: behaviour.secret }))}\nexit 0`
      : `printf '%s\\n' ${shellQuote(behaviour.stdout)}\nexit ${behaviour.exitCode}`;
  // One log line per call: the argument, a tab, then stdin (which carries no newline from a well-behaved client).
  const script = `#!/bin/sh\n{ printf '%s\\t' "$1"; cat; printf '\\n'; } >> ${shellQuote(log)}\n${answer}\n`;
  await writeFile(path, script);
  await chmod(path, 0o755);
  return {
    program,
    path,
    async calls() {
      const text = await readFile(log, "utf8").catch(() => "");
      return text
        .split("\n")
        .filter((line) => line.length > 0)
        .map((line) => {
          const tab = line.indexOf("\t");
          return { action: line.slice(0, tab), stdin: line.slice(tab + 1) };
        });
    },
  };
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
