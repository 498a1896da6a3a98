/** Where the cache lives: the llama.cpp cache directory, so models sit beside llama.cpp's own downloads. */
import { homedir } from "node:os";
import { join, resolve } from "node:path";

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (env.LLAMA_CACHE) return resolve(env.LLAMA_CACHE);
  if (platform === "win32") {
    const local = env.LOCALAPPDATA ?? join(env.USERPROFILE ?? homedir(), "AppData", "Local");
    return join(local, "llama.cpp");
  }
  if (env.XDG_CACHE_HOME) return join(resolve(env.XDG_CACHE_HOME), "llama.cpp");
  return join(env.HOME ?? homedir(), ".cache", "llama.cpp");
}
