// Python's notion of whitespace and of str.split() / str.rstrip(), which sacrebleu relies on.
// JS's \s differs: it includes U+FEFF and lacks U+001C–U+001F and U+0085.

/** 1 for the ASCII code units Python counts as whitespace. */
export const ASCII_WS = new Uint8Array(128);
for (const c of [9, 10, 11, 12, 13, 28, 29, 30, 31, 32]) ASCII_WS[c] = 1;

/** True when the UTF-16 code unit `c` is whitespace for Python's str.isspace(). */
export function isPyWhitespace(c: number): boolean {
  if (c < 128) return ASCII_WS[c] === 1;
  return (
    c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000
  );
}

/** Python's `s.split()` with no argument: runs of whitespace separate, none at either end. */
export function pySplit(s: string): string[] {
  const out: string[] = [];
  const n = s.length;
  let i = 0;
  while (i < n) {
    while (i < n && isPyWhitespace(s.charCodeAt(i))) i++;
    if (i >= n) break;
    const start = i;
    while (i < n && !isPyWhitespace(s.charCodeAt(i))) i++;
    out.push(s.slice(start, i));
  }
  return out;
}

/** Python's `s.rstrip()`. */
export function pyRstrip(s: string): string {
  let end = s.length;
  while (end > 0 && isPyWhitespace(s.charCodeAt(end - 1))) end--;
  return end === s.length ? s : s.slice(0, end);
}

/** Python's `''.join(s.split())`: the string without any whitespace. */
export function pyRemoveWhitespace(s: string): string {
  const n = s.length;
  let i = 0;
  while (i < n && !isPyWhitespace(s.charCodeAt(i))) i++;
  if (i === n) return s;
  let out = s.slice(0, i);
  for (; i < n; i++) {
    const c = s.charCodeAt(i);
    if (!isPyWhitespace(c)) out += s[i];
  }
  return out;
}

/** True when `s` has a UTF-16 surrogate, i.e. Python's code points and JS's code units differ. */
export function hasSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) return true;
  }
  return false;
}

/** The code points of `s` as strings (Python's iteration over a str). */
export function codePoints(s: string): string[] {
  return hasSurrogate(s) ? Array.from(s) : s.split('');
}
