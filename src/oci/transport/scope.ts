/** Token scopes (distribution token spec): what a request asks the token server to allow, and merging them. */

export type RepositoryAction = "pull" | "push";

/** "repository:<name>:<actions>"; actions in the order given, e.g. pushScope is "repository:x:push,pull". */
export function repositoryScope(repository: string, ...actions: RepositoryAction[]): string {
  return `repository:${repository}:${actions.join(",")}`;
}

export function pullScope(repository: string): string {
  return repositoryScope(repository, "pull");
}

export function pushScope(repository: string): string {
  return repositoryScope(repository, "push", "pull");
}

/** A `scope` parameter may hold several space-separated scopes. */
export function parseScopes(scopeParam: string | undefined): string[] {
  if (scopeParam === undefined) return [];
  return scopeParam.split(/\s+/).filter((scope) => scope !== "");
}

/** `wanted` first, then those of `held` not already in it. */
export function mergeScopes(wanted: readonly string[], held: readonly string[]): string[] {
  return [...wanted, ...held.filter((scope) => !wanted.includes(scope))];
}
