/**
 * Making cache writes survive a power cut: a file's data is fsynced before it is renamed into place, and the folder
 * that holds the new name is fsynced after, so that a crash leaves the old state or the new one, never a name that
 * points at bytes that never reached the disk (a right-sized file of zeros that a cache hit would trust).
 * Folders created on the way are made durable too (their parent is fsynced). Where a platform cannot fsync a folder
 * (Windows cannot open one), that step is skipped: NTFS journals renames itself.
 */
import { mkdir, open } from "node:fs/promises";
import { dirname, resolve } from "node:path";

/** Flushes a file's data and size to the disk. */
export async function fsyncFile(path: string): Promise<void> {
  // Windows needs write access to flush a file; elsewhere read-only is enough and works on read-only files.
  const handle = await open(path, process.platform === "win32" ? "r+" : "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Flushes a folder's entries (a rename or link into it, a file created in it) to the disk. */
export async function fsyncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, "r");
  } catch (error) {
    if (process.platform === "win32" && isUnsupported(error)) return;
    throw error;
  }
  try {
    await handle.sync();
  } catch (error) {
    // Some file systems (and Windows) refuse to fsync a folder; their renames are not made durable this way.
    if (!isUnsupported(error)) throw error;
  } finally {
    await handle.close();
  }
}

/** mkdir -p, then fsyncs the parent of every folder it created, so that those folders survive a crash. */
export async function mkdirDurable(dir: string): Promise<void> {
  const target = resolve(dir);
  const first = await mkdir(target, { recursive: true });
  if (first === undefined) return;
  // Created: first, its children down to target. Each one's name lives in its parent.
  const created: string[] = [];
  for (let at = target; ; at = dirname(at)) {
    created.push(at);
    if (at === resolve(first) || dirname(at) === at) break;
  }
  for (const folder of created.reverse()) await fsyncDir(dirname(folder));
}

function isUnsupported(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "EISDIR" || code === "EPERM" || code === "EINVAL" || code === "ENOTSUP" || code === "EACCES";
}
