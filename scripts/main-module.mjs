// Whether a script runs as the main module (node scripts/x.mjs) rather than being imported: real paths compared,
// so a path that needs URL escaping (space, %, #) or goes through a symbolic link is still recognised.
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

export function isMainModule(url) {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(url));
  } catch {
    return false;
  }
}
