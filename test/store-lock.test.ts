// The per-blob lock across real processes: waiters racing to take over a dead owner's lock never both hold it,
// a live owner keeps its lock however old the file (stopped with SIGSTOP, a laptop asleep), a reused pid (same pid,
// another start time) does not, and an owner on another host is judged by the age of its heartbeat.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { LlamaOciError } from "../src/errors.js";
import { acquireLock, isAbandoned } from "../src/oci/store/index.js";
import { ROOT_DIR } from "./helpers/cli.js";
import { ownStartTime } from "./helpers/proc-stat.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const LOCK_MODULE = pathToFileURL(join(ROOT_DIR, "dist", "esm", "oci", "store", "lock.js")).href;
const linux = process.platform === "linux";

let dir: string;
let count = 0;

beforeAll(async () => {
  dir = await makeTempDir("llama-oci-store-lock");
});

afterAll(async () => {
  await removeDir(dir);
});

const nextLock = () => join(dir, `${randomBytes(8).toString("hex")}-${++count}.lock`);

/** A pid that no process has now: a child that already exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ["-e", ""]).pid;
}

async function writeLock(path: string, owner: Record<string, unknown>, ageMs = 0): Promise<void> {
  await writeFile(path, `${JSON.stringify({ host: hostname(), at: new Date().toISOString(), nonce: randomBytes(8).toString("hex"), ...owner })}\n`);
  if (ageMs > 0) {
    const when = new Date(Date.now() - ageMs);
    await utimes(path, when, when);
  }
}

/** Resolves with the lock, or rejects with ABORTED when it is still busy after `ms`. */
async function acquireWithin(path: string, ms: number, staleMs = 30_000) {
  return acquireLock(path, { staleMs, pollMs: 20, signal: AbortSignal.timeout(ms) });
}

/** Waits for a line on a child's stdout that satisfies `match`. */
function waitForLine(child: ChildProcess, match: (line: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString("utf8");
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      const found = lines.find(match);
      if (found !== undefined) {
        child.stdout!.off("data", onData);
        resolve(found);
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`child exited (${code ?? "by a signal"}) before printing the expected line`)));
  });
}

// Each racer: loads the lock module, says "ready", waits for "go" on stdin (the barrier), takes the lock, marks the
// critical section with an exclusive create of a marker file (a second holder inside it would fail), holds it a
// while, and prints when it entered and left.
const RACER = `
import { openSync, closeSync, rmSync } from "node:fs";
const { acquireLock } = await import(process.env.LOCK_MODULE);
const [lockPath, marker, holdMs] = process.argv.slice(2);
const now = () => performance.timeOrigin + performance.now();
process.stdout.write("ready\\n");
process.stdin.once("data", async () => {
  const asked = now();
  const lock = await acquireLock(lockPath, { pollMs: 5 });
  const enter = now();
  let overlap = false;
  try {
    closeSync(openSync(marker, "wx"));
  } catch {
    overlap = true;
  }
  await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
  if (!overlap) rmSync(marker);
  const leave = now();
  await lock.release();
  process.stdout.write(JSON.stringify({ pid: process.pid, asked, enter, leave, overlap }) + "\\n");
  process.exit(0);
});
`;

interface Held {
  pid: number;
  asked: number;
  enter: number;
  leave: number;
  overlap: boolean;
}

describe("taking over a dead owner's lock", () => {
  const RACERS = 6;
  const ROUNDS = 3;

  test(`${RACERS} processes released at once on a dead owner's lock hold it one at a time (${ROUNDS} rounds)`, { timeout: 120_000 }, async () => {
    const script = join(dir, "racer.mjs");
    await writeFile(script, RACER);
    for (let round = 0; round < ROUNDS; round++) {
      const lockPath = nextLock();
      const marker = `${lockPath}.inside`;
      // The dead owner: the old format (pid and host) in one round, the current one (with a start time) in the others.
      await writeLock(lockPath, round === 0 ? { pid: deadPid() } : { pid: deadPid(), start: "12345" });
      const children = Array.from({ length: RACERS }, () =>
        spawn(process.execPath, [script, lockPath, marker, "150"], { env: { ...process.env, LOCK_MODULE }, stdio: ["pipe", "pipe", "inherit"] }),
      );
      const results = children.map((child) => waitForLine(child, (line) => line.startsWith("{")));
      await Promise.all(children.map((child) => waitForLine(child, (line) => line === "ready")));
      // The barrier: every racer is loaded and waiting; release them all at once.
      for (const child of children) child.stdin.write("go\n");
      const held = (await Promise.all(results)).map((line) => JSON.parse(line) as Held);
      await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once("exit", resolve)))));

      expect(held.map((h) => h.overlap)).toEqual(Array.from({ length: RACERS }, () => false));
      const sorted = [...held].sort((a, b) => a.enter - b.enter);
      for (let i = 1; i < sorted.length; i++) {
        expect(sorted[i]!.enter, `holder ${sorted[i]!.pid} entered before ${sorted[i - 1]!.pid} left`).toBeGreaterThanOrEqual(sorted[i - 1]!.leave);
      }
      // They really raced: all asked before the first one left.
      expect(Math.max(...held.map((h) => h.asked))).toBeLessThan(sorted[0]!.leave);
      expect(existsSync(lockPath)).toBe(false);
    }
    const leftovers = (await readdir(dir)).filter((name) => /\.(new|inside)$|\.takeover-/.test(name));
    expect(leftovers).toEqual([]);
  });
});

describe("who is alive", () => {
  test.skipIf(!linux)("a stopped (SIGSTOP) owner's lock, older than the stale age, is not taken; once it dies, it is", async () => {
    const lockPath = nextLock();
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { acquireLock } = await import(${JSON.stringify(LOCK_MODULE)}); await acquireLock(${JSON.stringify(lockPath)}); console.log("held"); setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await waitForLine(child, (line) => line === "held");
      child.kill("SIGSTOP");
      // Its heartbeat has stopped; make the file look an hour old, far past any stale age.
      const hourAgo = new Date(Date.now() - 3_600_000);
      await utimes(lockPath, hourAgo, hourAgo);
      expect(await isAbandoned(lockPath, 1_000)).toBe(false);
      const error: unknown = await acquireWithin(lockPath, 1_000, 1_000).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(LlamaOciError);
      expect((error as LlamaOciError).code).toBe("ABORTED");
      expect(JSON.parse(await readFile(lockPath, "utf8"))).toMatchObject({ pid: child.pid });
    } finally {
      child.kill("SIGKILL");
      child.kill("SIGCONT");
      await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once("exit", resolve)));
    }
    const lock = await acquireWithin(lockPath, 5_000);
    expect(JSON.parse(await readFile(lockPath, "utf8"))).toMatchObject({ pid: process.pid, start: ownStartTime() });
    await lock.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  test.skipIf(!linux)("a live pid with another start time (a reused pid) loses the lock at once, however fresh", async () => {
    const lockPath = nextLock();
    await writeLock(lockPath, { pid: process.pid, start: String(Number(ownStartTime()) + 1) });
    expect(await isAbandoned(lockPath)).toBe(true);
    const started = Date.now();
    const lock = await acquireWithin(lockPath, 5_000);
    expect(Date.now() - started).toBeLessThan(2_000);
    await lock.release();
  });

  test.skipIf(!linux)("a live pid with its own start time keeps the lock, however old", async () => {
    const lockPath = nextLock();
    await writeLock(lockPath, { pid: process.pid, start: ownStartTime() }, 3_600_000);
    expect(await isAbandoned(lockPath, 1_000)).toBe(false);
    await expect(acquireWithin(lockPath, 500, 1_000)).rejects.toMatchObject({ code: "ABORTED" });
  });

  test.skipIf(!linux)("a lock from an earlier boot is abandoned, whatever its pid", async () => {
    const lockPath = nextLock();
    await writeLock(lockPath, { pid: process.pid, start: ownStartTime(), boot: "00000000-0000-0000-0000-000000000000" });
    expect(await isAbandoned(lockPath)).toBe(true);
  });

  test("a dead pid on this host is abandoned at once", async () => {
    const lockPath = nextLock();
    await writeLock(lockPath, { pid: deadPid() });
    const lock = await acquireWithin(lockPath, 5_000);
    await lock.release();
  });

  test("an owner on another host is judged by its heartbeat: fresh is kept, older than the stale age is taken", async () => {
    const fresh = nextLock();
    await writeLock(fresh, { pid: deadPid(), host: "elsewhere.example" });
    expect(await isAbandoned(fresh, 10_000)).toBe(false);
    await expect(acquireWithin(fresh, 300, 10_000)).rejects.toMatchObject({ code: "ABORTED" });

    const old = nextLock();
    await writeLock(old, { pid: process.pid, host: "elsewhere.example" }, 20_000);
    expect(await isAbandoned(old, 10_000)).toBe(true);
    const lock = await acquireWithin(old, 5_000, 10_000);
    await lock.release();
  });

  test.skipIf(!linux)("an owner in another pid namespace of this host is judged by its heartbeat, not by its pid", async () => {
    const lockPath = nextLock();
    await writeLock(lockPath, { pid: deadPid(), start: "1", pidns: "pid:[1]" });
    expect(await isAbandoned(lockPath, 10_000)).toBe(false);
    const old = new Date(Date.now() - 20_000);
    await utimes(lockPath, old, old);
    expect(await isAbandoned(lockPath, 10_000)).toBe(true);
  });

  test("waiting for a busy lock ends as soon as its signal aborts, and onWait said it was waiting", async () => {
    const lockPath = nextLock();
    const held = await acquireWithin(lockPath, 1_000);
    const controller = new AbortController();
    let waits = 0;
    const waiting = acquireLock(lockPath, { signal: controller.signal, pollMs: 1_000, onWait: () => waits++ });
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    await expect(waiting).rejects.toMatchObject({ code: "ABORTED" });
    expect(Date.now() - started).toBeLessThan(900);
    expect(waits).toBe(1);
    await held.release();
  });

  test("a lock file is written whole: its owner is there as soon as the file is", async () => {
    const lockPath = nextLock();
    const lock = await acquireWithin(lockPath, 1_000);
    const owner = JSON.parse(await readFile(lockPath, "utf8")) as Record<string, unknown>;
    expect(owner).toMatchObject({ pid: process.pid, host: hostname() });
    expect(typeof owner.nonce).toBe("string");
    await lock.release();
    expect((await readdir(dir)).filter((name) => name.endsWith(".new"))).toEqual([]);
  });
});
