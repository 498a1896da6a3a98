/**
 * The folder holding this module's compiled file. The same sources build to CommonJS (where __dirname exists) and
 * to ES modules, where scripts/build-ts.mjs replaces this file with one computed from import.meta.url; vitest
 * provides __dirname for src/ too.
 */
declare const __dirname: string;

export const moduleDir: string = __dirname;
