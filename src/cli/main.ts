/** The llama-oci command line: dispatches to one command per file, maps failures to exit codes. */
import { isAbort } from "../errors.js";
import type { CliContext } from "./context.js";
import { formatError, UsageError } from "./output.js";
import { benchCommand } from "./bench-command.js";
import { chatCommand } from "./chat-command.js";
import { inspectCommand } from "./inspect-command.js";
import { lsCommand } from "./ls-command.js";
import { packageCommand } from "./package-command.js";
import { pruneCommand } from "./prune-command.js";
import { pullCommand } from "./pull-command.js";
import { pushCommand } from "./push-command.js";
import { rmCommand } from "./rm-command.js";
import { runCommand } from "./run-command.js";
import { tagCommand } from "./tag-command.js";

const VERSION = "0.1.0";

const USAGE = `Usage: llama-oci <command> [options]

Commands:
  pull <reference>    pull a GGUF model from an OCI registry into the cache and print its path
  run <reference>     pull if needed and stream a completion of -p <prompt> to stdout
  chat <reference>    chat with a model using its chat template
  bench <reference>   measure prompt and generation tokens per second (llama-bench's table)
  ls                  list the cached models: name, ID, size, when pulled
  rm <reference>...   remove models from the cache (files only once no other name uses them)
  prune               delete unused files and week-old partial downloads from the cache
  tag <src> <dst>     give a cached model a second name
  inspect <reference> show a model's manifest, config and GGUF header (--remote: read only the header)
  package <reference> build a model artifact from local GGUF files into the cache (--push: and upload it)
  push <reference>    upload a cached model to its registry

Run 'llama-oci <command> --help' for the options of a command.
Examples:
  llama-oci pull ai/smollm2:135M-Q4_0
  llama-oci pull registry.example.com/team/model:Q4_K_M --json
  llama-oci run ai/smollm2:135M-Q4_0 -p "Once upon a time" -n 64
  llama-oci chat ai/smollm2:135M-Q4_0
  llama-oci bench -m model.gguf -p 512 -n 128 -r 5
  llama-oci package --gguf ./model-Q4_0.gguf registry.example.com/team/model:Q4_0 --push`;

type Command = (argv: string[], cli: CliContext) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  pull: pullCommand,
  run: runCommand,
  chat: chatCommand,
  bench: benchCommand,
  ls: lsCommand,
  rm: rmCommand,
  prune: pruneCommand,
  tag: tagCommand,
  inspect: inspectCommand,
  package: packageCommand,
  push: pushCommand,
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
    return await command(rest, cli);
  } catch (error) {
    if (isAbort(error) && cli.signal.aborted) {
      cli.stderr.write("\ninterrupted: partial downloads are kept; run the same command again to resume\n");
      return 130;
    }
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      cli.stderr.write(`error: ${(error as Error).message} (run 'llama-oci ${COMMANDS[name ?? ""] ? `${name} ` : ""}--help')\n`);
      return 2;
    }
    cli.stderr.write(`${formatError(error)}\n`);
    return 1;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
