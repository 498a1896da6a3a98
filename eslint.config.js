// ESLint flat config: `npm run lint` (eslint --max-warnings 0 src test scripts bench bin).
//
// TypeScript files get typescript-eslint's recommendedTypeChecked rules, checked against tsconfig.eslint.json (src,
// test, scripts and bench .ts files); JavaScript files (scripts/*.mjs, bench/**/*.mjs, bin/*.js, test/fixtures/*.mjs)
// get ESLint's recommended rules with Node's globals and no type information. Every file is checked for import
// cycles (import-x/no-cycle), with `.js` specifiers resolved to the `.ts` files they name.
import js from "@eslint/js";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";
import { createNodeResolver, importX } from "eslint-plugin-import-x";
import { defineConfig, globalIgnores } from "eslint/config";
import globals from "globals";
import tseslint from "typescript-eslint";

const TS_FILES = ["**/*.ts", "**/*.mts", "**/*.cts"];
const JS_FILES = ["**/*.js", "**/*.mjs", "**/*.cjs"];

export default defineConfig(
  globalIgnores([
    "dist/",
    "build/",
    "deps/",
    "node_modules/",
    "bench/**/node_modules/",
    "bench/**/work/",
    "test/.tmp/",
    ".cache/",
  ]),

  {
    name: "llama-oci/all",
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      sourceType: "module",
      globals: { ...globals.node },
    },
    linterOptions: {
      reportUnusedDisableDirectives: "error",
    },
    rules: {
      // Unused bindings are errors; a leading underscore marks one that is unused on purpose (a callback's
      // parameter, a slot skipped in destructuring). Rest siblings drop properties from a copy
      // (`const { context, ...rest } = options`), which is how the code filters option objects.
      "@typescript-eslint/no-unused-vars": [
        "error",
        {
          args: "after-used",
          argsIgnorePattern: "^_",
          varsIgnorePattern: "^_",
          caughtErrorsIgnorePattern: "^_",
          destructuredArrayIgnorePattern: "^_",
          ignoreRestSiblings: true,
        },
      ],
      // Messages interpolate counts, sizes and status codes all the time; numbers (and bigints, the GGUF reader's
      // 64-bit fields) print as one expects. Anything else (objects, unknown, nullish, booleans) must be turned
      // into text on purpose.
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        { allowNumber: true, allowBoolean: false, allowAny: false, allowNullish: false, allowRegExp: false, allowNever: false },
      ],
      // Type-only imports stay type-only (`import type` / `type X`), so that the emitted JavaScript does not load a
      // module just for its types, and so that import-x/no-cycle sees which imports are real.
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "@typescript-eslint/no-import-type-side-effects": "error",
      // Control characters in regular expressions are deliberate here: the progress renderer and the tests match
      // ANSI escape sequences (\x1b[...), and path and terminal-text checks reject or strip C0/C1 controls.
      "no-control-regex": "off",
      eqeqeq: ["error", "always", { null: "ignore" }],
      "no-var": "error",
      "prefer-const": "error",
    },
  },

  {
    name: "llama-oci/typescript",
    files: TS_FILES,
    languageOptions: {
      parserOptions: { project: "./tsconfig.eslint.json", tsconfigRootDir: import.meta.dirname },
    },
  },

  {
    name: "llama-oci/import-cycles",
    plugins: { "import-x": importX },
    settings: {
      "import-x/extensions": [".ts", ".mts", ".cts", ".js", ".mjs", ".cjs"],
      "import-x/parsers": { "@typescript-eslint/parser": [".ts", ".mts", ".cts"] },
      // The TypeScript resolver maps "./context.js" to ./context.ts as tsc does (moduleResolution NodeNext); the
      // node resolver covers the .mjs scripts.
      "import-x/resolver-next": [
        createTypeScriptImportResolver({ project: `${import.meta.dirname}/tsconfig.eslint.json`, alwaysTryTypes: true }),
        createNodeResolver(),
      ],
    },
    rules: {
      // The rule skips type-only imports (`import type`, or every name imported with `type`): they are erased at
      // compile time, so they cannot make a module load before the one it needs.
      "import-x/no-cycle": ["error", { ignoreExternal: true }],
    },
  },

  {
    name: "llama-oci/javascript",
    files: JS_FILES,
    extends: [tseslint.configs.disableTypeChecked],
  },

  {
    name: "llama-oci/commonjs",
    files: ["**/*.cjs"],
    languageOptions: { sourceType: "commonjs" },
    rules: {
      // CommonJS files (a preload for `node -r`) can only require().
      "@typescript-eslint/no-require-imports": "off",
    },
  },
);
