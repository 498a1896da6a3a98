/** A parsed JSON value that is an object (not null, not an array): the one check every JSON reader here uses. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
