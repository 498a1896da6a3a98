/** The llama-oci command line: dispatches to one command per file, maps failures to exit codes. */
import { isAbort } from "../errors.js";
import type { CliContext } from "./context.js";
import { formatError, UsageError } from "./output.js";

const VERSION = "0.1.0";

const USAGE = `Usage: llama-oci <command> [options]

Commands:
  pull <reference>    pull a GGUF model from an OCI registry into the cache and print its path
  run <reference>     pull if needed and stream a completion of -p <prompt> to stdout
  chat <reference>    chat with a model using its chat template
  bench <reference>   measure prompt and generation tokens per second (llama-bench's table)
  serve               serve models by reference over HTTP: OpenAI's API (/v1) and Ollama's (/api)
  ls                  list the cached models: name, ID, size, when pulled
  rm <reference>...   remove models from the cache (files only once no other name uses them)
  prune               delete unused files and week-old partial downloads from the cache
  tag <src> <dst>     give a cached model a second name
  inspect <reference> show a model's manifest, config and GGUF header (--remote: read only the header)
  package <reference> build a model artifact from local GGUF files into the cache (--push: and upload it)
  push <reference>    upload a cached model to its registry
  save <ref> oci:<dir>  write a cached model into an OCI image layout folder (pull oci:<dir>:<tag> reads it)

Run 'llama-oci <command> --help' for the options of a command.
Examples:
  llama-oci pull ai/smollm2:135M-Q4_0
  llama-oci pull registry.example.com/team/model:Q4_K_M --json
  llama-oci run ai/smollm2:135M-Q4_0 -p "Once upon a time" -n 64
  llama-oci chat ai/smollm2:135M-Q4_0
  llama-oci bench -m model.gguf -p 512 -n 128 -r 5
  llama-oci serve --model ai/smollm2:135M-Q4_0 --port 8080
  llama-oci package --gguf ./model-Q4_0.gguf registry.example.com/team/model:Q4_0 --push`;

type Command = (argv: string[], cli: CliContext) => Promise<number>;

/** Each command's module is loaded only when that command runs: a pull does not pay for the inference layer. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  pull: async () => (await import("./pull-command.js")).pullCommand,
  run: async () => (await import("./run-command.js")).runCommand,
  chat: async () => (await import("./chat-command.js")).chatCommand,
  bench: async () => (await import("./bench-command.js")).benchCommand,
  serve: async () => (await import("./serve-command.js")).serveCommand,
  ls: async () => (await import("./ls-command.js")).lsCommand,
  rm: async () => (await import("./rm-command.js")).rmCommand,
  prune: async () => (await import("./prune-command.js")).pruneCommand,
  tag: async () => (await import("./tag-command.js")).tagCommand,
  inspect: async () => (await import("./inspect-command.js")).inspectCommand,
  package: async () => (await import("./package-command.js")).packageCommand,
  push: async () => (await import("./push-command.js")).pushCommand,
  save: async () => (await import("./save-command.js")).saveCommand,
};

/** Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl+C). */
export async function main(argv: string[], context?: Partial<CliContext>): Promise<number> {
  const controller = new AbortController();
  const cli: CliContext = {
    stdout: context?.stdout ?? process.stdout,
    stderr: context?.stderr ?? process.stderr,
    env: context?.env ?? process.env,
    signal: context?.signal ?? controller.signal,
  };
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) process.exit(130);
    controller.abort(new Error("interrupted"));
  };
  if (!context?.signal) process.on("SIGINT", onSigint);

  const [name, ...rest] = argv;
  try {
    if (!name || name === "-h" || name === "--help" || name === "help") {
      cli.stdout.write(`${USAGE}\n`);
      return name ? 0 : 2;
    }
    if (name === "--version" || name === "-V") {
      cli.stdout.write(`${VERSION}\n`);
      return 0;
    }
    const command = COMMANDS[name];
    if (!command) throw new UsageError(`unknown command '${name}'`);
    return await (await command())(rest, cli);
  } catch (error) {
    if (isAbort(error) && cli.signal.aborted) {
      cli.stderr.write("\ninterrupted: partial downloads are kept; run the same command again to resume\n");
      return 130;
    }
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      cli.stderr.write(`error: ${(error as Error).message} (run 'llama-oci ${name !== undefined && COMMANDS[name] ? `${name} ` : ""}--help')\n`);
      return 2;
    }
    cli.stderr.write(`${formatError(error)}\n`);
    return 1;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
