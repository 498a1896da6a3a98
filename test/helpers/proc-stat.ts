import { readFileSync } from "node:fs";

/**
 * The fields of /proc/<pid>/stat after the command name (Linux): index 0 is field 3 of proc(5), `state`. The name
 * is cut at its last ")" since it may itself hold spaces and parentheses.
 */
export function procStat(pid: number | "self"): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** CPU time a process has used (user and system), in clock ticks: fields 14 and 15 of proc(5). */
export function cpuTicks(pid: number): number {
  const fields = procStat(pid);
  return Number(fields[11]) + Number(fields[12]);
}

/** When this process started, in clock ticks after boot (field 22 of proc(5)), as the lock files record it. */
export function ownStartTime(): string {
  return procStat("self")[19]!;
}
