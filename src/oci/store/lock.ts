/**
 * A cross-process lock on a file path (one per blob), so that concurrent pulls of the same model, in one process
 * or in several, download each blob once.
 *
 * The lock file names its owner: pid, host and, on Linux, the process's start time (field 22 of /proc/<pid>/stat),
 * the boot it belongs to and its pid namespace. An owner on this host (same host name and pid namespace) is judged
 * by whether it still runs: a dead pid, a pid now used by another process (another start time) or a lock from an
 * earlier boot is abandoned; a live owner keeps its lock however long it has not refreshed it (a stopped process,
 * a laptop asleep). Without a start time (other platforms) a live pid is trusted. An owner on another host (a cache
 * on a network file system) is judged by its heartbeat: the owner touches the file every staleMs / 3, and one not
 * touched for staleMs is abandoned.
 *
 * Taking over an abandoned lock is atomic: only the process that holds the takeover guard of that exact lock file
 * (`<lock>.takeover-<id>`, itself a lock of this kind) may delete it, after checking that it is still the same
 * file and still abandoned; then everyone competes for a new lock with an exclusive create as usual. So two
 * waiters that both judged a dead owner's lock abandoned never both hold it. A lock file is created whole (written
 * under a temporary name and hard-linked into place), so nobody ever reads half of one.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import { link, open, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { abortError } from "../../errors.js";
import { delay } from "../../util/delay.js";

export interface LockOptions {
  signal?: AbortSignal;
  /** A lock of an owner on another host not refreshed for this long is considered abandoned. */
  staleMs?: number;
  pollMs?: number;
  /** Called once if the lock is busy, before waiting. */
  onWait?: () => void;
}

export interface Lock {
  release(): Promise<void>;
}

/** What a lock file says about its owner. */
export interface LockOwner {
  pid: number;
  host: string;
  /** Process start time in clock ticks since boot (Linux), as a decimal string. */
  start?: string;
  /** /proc/sys/kernel/random/boot_id (Linux). */
  boot?: string;
  /** The pid namespace, as /proc/self/ns/pid names it (Linux): pids of other namespaces mean nothing here. */
  pidns?: string;
  at: string;
  /** Random: no two lock files have the same content. */
  nonce: string;
}

const HOST = hostname();
export const DEFAULT_STALE_MS = 30_000;
/** How deep takeovers of takeover guards may nest (each level needs a process that died while taking over). */
const MAX_TAKEOVER_DEPTH = 4;

export async function acquireLock(path: string, options: LockOptions = {}): Promise<Lock> {
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  const pollMs = options.pollMs ?? 100;
  let waited = false;
  for (;;) {
    if (options.signal?.aborted) throw abortError(options.signal);
    const owner = await attempt(path, staleMs, 0);
    if (owner !== undefined) return heldLock(path, owner, staleMs, true);
    if (!waited) {
      waited = true;
      options.onWait?.();
    }
    await delay(pollMs, options.signal);
  }
}

/** Whether a lock file's owner is gone (see the top of this file); true when the file itself is gone. */
export async function isAbandoned(path: string, staleMs = DEFAULT_STALE_MS): Promise<boolean> {
  // A lock file that cannot be read (permissions) is not ours to judge: live.
  const look = await inspect(path, staleMs).catch(() => ({ abandoned: false }));
  return look === undefined || look.abandoned;
}

/** The owner this process writes into its lock files. */
export function currentOwner(): LockOwner {
  SELF_START ??= linuxIdentity(process.pid);
  return {
    pid: process.pid,
    host: HOST,
    ...(SELF_START.start !== undefined ? { start: SELF_START.start } : {}),
    ...(BOOT_ID !== undefined ? { boot: BOOT_ID } : {}),
    ...(PID_NS !== undefined ? { pidns: PID_NS } : {}),
    at: new Date().toISOString(),
    nonce: randomBytes(8).toString("hex"),
  };
}

/** One try: the lock's content when it was created (or an abandoned one was taken over), else undefined. */
async function attempt(path: string, staleMs: number, depth: number): Promise<string | undefined> {
  // A few rounds, for a lock that is released or taken over between two looks. A busy lock is only looked at (no
  // file is created while waiting for it).
  for (let round = 0; round < 3; round++) {
    const look = await inspect(path, staleMs);
    if (look === undefined) {
      const owner = await create(path);
      if (owner !== undefined) return owner;
      continue;
    }
    if (!look.abandoned || depth >= MAX_TAKEOVER_DEPTH) return undefined;
    if (!(await takeOver(path, look, staleMs, depth))) return undefined;
  }
  return undefined;
}

/**
 * Deletes an abandoned lock file, if this process is the one allowed to: the holder of its takeover guard, and only
 * while the file is still the one judged abandoned. True when the lock file is gone (deleted here or released).
 */
async function takeOver(path: string, look: LockLook, staleMs: number, depth: number): Promise<boolean> {
  const guardPath = `${path}.takeover-${look.id}`;
  const guard = await attempt(guardPath, staleMs, depth + 1);
  if (guard === undefined) return false;
  const held = heldLock(guardPath, guard, staleMs, false);
  try {
    const again = await inspect(path, staleMs);
    if (again === undefined) return true;
    if (again.id !== look.id || !again.abandoned) return false;
    await rm(path, { force: true });
    return true;
  } finally {
    await held.release();
  }
}

/** Creates the lock file with its whole content, atomically; undefined when it already exists. */
async function create(path: string): Promise<string | undefined> {
  const owner = `${JSON.stringify(currentOwner())}\n`;
  const temp = `${path}.${randomBytes(6).toString("hex")}.new`;
  await writeFile(temp, owner, { flag: "wx" });
  try {
    await link(temp, path);
    return owner;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return undefined;
    // No hard links on this file system: an exclusive create, then the content (a reader may see it empty for a
    // moment, which inspect() allows for).
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EMLINK" && code !== "ENOSYS") throw error;
    return createInPlace(path, owner);
  } finally {
    await rm(temp, { force: true });
  }
}

async function createInPlace(path: string, owner: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(path, "wx");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return undefined;
    throw error;
  }
  try {
    await handle.writeFile(owner);
  } finally {
    await handle.close();
  }
  return owner;
}

function heldLock(path: string, owner: string, staleMs: number, heartbeat: boolean): Lock {
  const timer = heartbeat
    ? setInterval(() => {
        const now = new Date();
        utimes(path, now, now).catch(() => {});
      }, Math.max(1000, Math.floor(staleMs / 3)))
    : undefined;
  timer?.unref();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      // Only remove the file if it is still ours (an owner on another host may have been judged stale).
      const current = await readFile(path, "utf8").catch(() => undefined);
      if (current === owner) await rm(path, { force: true });
    },
  };
}

interface LockLook {
  /** This exact lock file: its content, inode and modification time. */
  id: string;
  abandoned: boolean;
}

/** What the lock file at path is and whether its owner is gone; undefined when there is no file. */
async function inspect(path: string, staleMs: number): Promise<LockLook | undefined> {
  let content: string;
  let info: { ino: number; mtimeMs: number };
  try {
    // One open file for both, so that the content and the inode are those of the same file.
    const handle = await open(path, "r");
    try {
      info = await handle.stat();
      content = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  const id = createHash("sha256").update(`${info.ino}:${info.mtimeMs}:${content}`).digest("hex").slice(0, 16);
  const age = Date.now() - info.mtimeMs;
  let owner: Partial<LockOwner>;
  try {
    owner = JSON.parse(content) as Partial<LockOwner>;
  } catch {
    // Being written right now (a file system without hard links), or garbage: judge by age alone.
    return { id, abandoned: age > Math.min(staleMs, 5_000) };
  }
  return { id, abandoned: ownerGone(owner, age, staleMs) };
}

function ownerGone(owner: Partial<LockOwner>, ageMs: number, staleMs: number): boolean {
  const pid = owner.pid;
  const validPid = typeof pid === "number" && Number.isSafeInteger(pid) && pid > 0;
  const sameHost = owner.host === HOST && validPid && (owner.pidns === undefined || PID_NS === undefined || owner.pidns === PID_NS);
  if (!sameHost) return ageMs > staleMs;
  if (owner.boot !== undefined && BOOT_ID !== undefined && owner.boot !== BOOT_ID) return true;
  if (!processAlive(pid)) return true;
  if (owner.start === undefined) return false;
  const now = linuxIdentity(pid).start;
  // Unreadable (it exited just now, or /proc is hidden): alive a moment ago, so trust it; the next look decides.
  if (now === undefined) return !processAlive(pid);
  return now !== owner.start;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A process's start time in clock ticks since boot, from /proc/<pid>/stat (Linux); undefined elsewhere. */
function linuxIdentity(pid: number): { start?: string } {
  if (process.platform !== "linux") return {};
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so count fields after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const start = fields[22 - 3];
    return start !== undefined && /^\d+$/.test(start) ? { start } : {};
  } catch {
    return {};
  }
}

function readProc(read: () => string): string | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
}

let SELF_START: { start?: string } | undefined;
const BOOT_ID = readProc(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8"));
const PID_NS = readProc(() => readlinkSync("/proc/self/ns/pid"));
