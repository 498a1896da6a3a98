#!/usr/bin/env node
// Checks that the native addon's C++ (native/*.cpp, native/*.h) is formatted as the repository's .clang-format says;
// with --fix, formats those files in place instead.
//
//   node scripts/check-format.mjs [--fix]      (npm run format:check / npm run format)
//
//   CLANG_FORMAT   the clang-format to run (default: clang-format on PATH). .clang-format is written for
//                  clang-format 14 (Debian 12); other major versions may format some constructs differently.
//
// Exit status: 0 formatted, 1 some file is not formatted (or formatting failed), 2 clang-format is missing.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const nativeDir = join(root, "native");
const clangFormat = process.env.CLANG_FORMAT || "clang-format";
const fix = process.argv.includes("--fix");
/** Lines of clang-format's report shown per unformatted file. */
const REPORT_LINES = 12;

function main() {
  const version = spawnSync(clangFormat, ["--version"], { encoding: "utf8" });
  if (version.error || version.status !== 0) {
    console.error(
      `format: ${clangFormat} is not installed or does not run (${version.error?.message ?? `exit status ${version.status}`}).\n` +
        "  Install it (Debian/Ubuntu: apt-get install -y clang-format; macOS: brew install clang-format),\n" +
        "  or point CLANG_FORMAT at a clang-format binary.",
    );
    return 2;
  }
  const versionText = version.stdout.trim();

  const files = readdirSync(nativeDir)
    .filter((name) => /\.(cpp|h)$/.test(name))
    .sort()
    .map((name) => join(nativeDir, name));
  if (files.length === 0) {
    console.error(`format: no .cpp or .h files in ${relative(root, nativeDir)}/`);
    return 1;
  }

  if (fix) {
    const result = spawnSync(clangFormat, ["-i", "--style=file", ...files], { cwd: root, encoding: "utf8" });
    if (result.error || result.status !== 0) {
      console.error(`format: ${clangFormat} -i failed:\n${result.error?.message ?? result.stderr}`);
      return 1;
    }
    console.error(`format: formatted ${files.length} files in native/ (${versionText})`);
    return 0;
  }

  const unformatted = [];
  for (const file of files) {
    const name = relative(root, file);
    const result = spawnSync(clangFormat, ["--dry-run", "--Werror", "--style=file", name], { cwd: root, encoding: "utf8" });
    if (result.error) {
      console.error(`format: cannot run ${clangFormat} on ${name}: ${result.error.message}`);
      return 1;
    }
    if (result.status !== 0) {
      unformatted.push(name);
      const lines = result.stderr.trimEnd().split("\n");
      const shown = lines.slice(0, REPORT_LINES).join("\n");
      console.error(`${shown}${lines.length > REPORT_LINES ? `\n  ... (${lines.length - REPORT_LINES} more lines)` : ""}\n`);
    }
  }
  if (unformatted.length > 0) {
    console.error(
      `format: ${unformatted.length} of ${files.length} native files are not formatted: ${unformatted.join(", ")}\n` +
        `  Run \`npm run format\` to format them (checked with ${versionText}).`,
    );
    return 1;
  }
  console.error(`format: all ${files.length} native files are formatted (${versionText})`);
  return 0;
}

process.exitCode = main();
