/** What a CLI command works with, passed in rather than taken from globals so commands are testable. */
export interface CliContext {
  /** Input for interactive commands (chat); default process.stdin. */
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
}
