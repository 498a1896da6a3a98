/**
 * A cross-process lock on a file path (one per blob), so that concurrent pulls of the same model, in one process
 * or in several, download each blob once. The lock file holds the owner's pid and host; a lock whose owner died
 * (crash, SIGKILL) or that has not been refreshed for a while is taken over.
 */
import { open, readFile, rm, stat, utimes } from "node:fs/promises";
import { hostname } from "node:os";
import { abortError } from "../../errors.js";
import { delay } from "../../util/delay.js";

export interface LockOptions {
  signal?: AbortSignal;
  /** A lock not refreshed for this long is considered abandoned. */
  staleMs?: number;
  pollMs?: number;
  /** Called once if the lock is busy, before waiting. */
  onWait?: () => void;
}

export interface Lock {
  release(): Promise<void>;
}

const HOST = hostname();
export const DEFAULT_STALE_MS = 30_000;

export async function acquireLock(path: string, options: LockOptions = {}): Promise<Lock> {
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  const pollMs = options.pollMs ?? 100;
  let waited = false;
  for (;;) {
    if (options.signal?.aborted) throw abortError(options.signal);
    try {
      const handle = await open(path, "wx");
      const owner = `${JSON.stringify({ pid: process.pid, host: HOST, at: new Date().toISOString() })}\n`;
      await handle.writeFile(owner);
      await handle.close();
      return heldLock(path, owner, staleMs);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    if (await isAbandoned(path, staleMs)) {
      await rm(path, { force: true });
      continue;
    }
    if (!waited) {
      waited = true;
      options.onWait?.();
    }
    await delay(pollMs, options.signal);
  }
}

function heldLock(path: string, owner: string, staleMs: number): Lock {
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, Math.max(1000, Math.floor(staleMs / 3)));
  heartbeat.unref();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      clearInterval(heartbeat);
      // Only remove the file if it is still ours (it may have been taken over as stale).
      const current = await readFile(path, "utf8").catch(() => undefined);
      if (current === owner) await rm(path, { force: true });
    },
  };
}

/** Whether a lock file's owner died (same host, pid gone) or stopped refreshing it for staleMs. */
export async function isAbandoned(path: string, staleMs = DEFAULT_STALE_MS): Promise<boolean> {
  let content: string;
  let mtimeMs: number;
  try {
    [content, { mtimeMs }] = await Promise.all([readFile(path, "utf8"), stat(path)]);
  } catch (error) {
    // Released between our attempt and this look: try again at once.
    return (error as NodeJS.ErrnoException).code === "ENOENT";
  }
  let owner: { pid?: number; host?: string } = {};
  try {
    owner = JSON.parse(content) as typeof owner;
  } catch {
    // being written right now, or garbage: judge by age alone
    return Date.now() - mtimeMs > Math.min(staleMs, 5_000);
  }
  if (owner.host === HOST && typeof owner.pid === "number" && !processAlive(owner.pid)) return true;
  return Date.now() - mtimeMs > staleMs;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
