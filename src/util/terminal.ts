/**
 * Text from a registry, a manifest, a config or a GGUF file made safe for a terminal: escape sequences (CSI, OSC,
 * including OSC 52 that writes the clipboard), BEL, CR, backspace and every other C0 or C1 control character are
 * removed, so such a string can never move the cursor, rewrite a line, retitle a window or reach the clipboard.
 */

// ESC followed by a CSI (`[`...final byte), an OSC/DCS/PM/APC/SOS string (up to BEL or ESC \), or one more byte.
const ESCAPE_SEQUENCE = /\u001b(?:\[[0-?]*[ -/]*[@-~]|[\]PX^_][^\u0007\u001b]*(?:\u0007|\u001b\\)?|[\s\S]?)/g;
// The C1 equivalents: CSI (U+009B) and OSC/DCS/PM/APC/SOS (U+009D, U+0090, U+009E, U+009F, U+0098) strings.
const C1_SEQUENCE = /\u009b[0-?]*[ -/]*[@-~]|[\u009d\u0090\u009e\u009f\u0098][^\u0007\u009c\u001b]*(?:\u0007|\u009c)?/g;
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;
const CONTROLS_BUT_LINES = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** One line: every control character goes, a run of whitespace-like ones becoming one space. */
export function terminalSafe(text: string): string {
  return text.replace(ESCAPE_SEQUENCE, "").replace(C1_SEQUENCE, "").replace(/[\t\n\r\v\f]+/g, " ").replace(CONTROLS, "");
}

/** Several lines (a chat template): newlines and tabs stay, every other control character goes. */
export function terminalSafeLines(text: string): string {
  return text.replace(ESCAPE_SEQUENCE, "").replace(C1_SEQUENCE, "").replace(/\r\n?/g, "\n").replace(CONTROLS_BUT_LINES, "");
}

/** JSON for a terminal: JSON.stringify escapes C0 controls but not C1 ones (U+0080-U+009F), which this escapes too. */
export function terminalSafeJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[\u007f-\u009f]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
