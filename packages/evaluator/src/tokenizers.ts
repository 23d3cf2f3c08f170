// sacrebleu 2.6.0's tokenizers, reproduced so that tokens (and so BLEU) match it exactly.
// Each returns the token list that sacrebleu gets from `tokenizer(line).split()`.
import { ASCII_WS, codePoints, isPyWhitespace, pySplit } from './pytext';

export type BleuTokenizerName = '13a' | 'intl' | 'char' | 'none';
export type BleuTokenizer = (line: string) => string[];

// The four regex passes of sacrebleu's TokenizerRegexp (mteval-v13a's language-dependent part):
//   1. ([\{-\~\[-\` -\&\(-\+\:-\@\/]) → ' \1 '   pad ASCII punctuation and symbols except ' , - .
//   2. ([^0-9])([\.,])              → '\1 \2 ' period or comma after a non-digit
//   3. ([\.,])([^0-9])              → ' \1 \2' period or comma before a non-digit
//   4. ([0-9])(-)                   → '\1 \2 ' dash after a digit
// Python's re.sub takes leftmost non-overlapping matches, and each pass sees the spaces the previous
// ones inserted, which decides some matches ('.,a' keeps ',a' together). The scanner below replays
// the passes on code units, remembering for each unit its index in the input (-1 for an inserted
// space); since passes only insert spaces, every final token is a slice of the input.
const PASS1 = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  if ((c >= 0x7b && c <= 0x7e) || (c >= 0x5b && c <= 0x60) || (c >= 0x20 && c <= 0x26) || (c >= 0x28 && c <= 0x2b) || (c >= 0x3a && c <= 0x40) || c === 0x2f) PASS1[c] = 1;
}

const SPACE = 0x20;

let bufA = new Int32Array(1024);
let bufB = new Int32Array(1024);
let posA = new Int32Array(1024);
let posB = new Int32Array(1024);

function ensure(n: number): void {
  if (bufA.length >= n) return;
  let size = bufA.length;
  while (size < n) size *= 2;
  bufA = new Int32Array(size);
  bufB = new Int32Array(size);
  posA = new Int32Array(size);
  posB = new Int32Array(size);
}

/** Pass 2, ([^0-9])([\.,]) → '\1 \2 ': from (code, pos)[0, m) into (oc, op); returns the new length. */
function periodCommaAfterNonDigit(code: Int32Array, pos: Int32Array, m: number, oc: Int32Array, op: Int32Array): number {
  let k = 0;
  let i = 0;
  while (i < m) {
    const a = code[i];
    if (i + 1 < m && !(a >= 0x30 && a <= 0x39)) {
      const b = code[i + 1];
      if (b === 0x2e || b === 0x2c) {
        oc[k] = a; op[k++] = pos[i];
        oc[k] = SPACE; op[k++] = -1;
        oc[k] = b; op[k++] = pos[i + 1];
        oc[k] = SPACE; op[k++] = -1;
        i += 2;
        continue;
      }
    }
    oc[k] = a; op[k++] = pos[i];
    i++;
  }
  return k;
}

/** Pass 3, ([\.,])([^0-9]) → ' \1 \2'. */
function periodCommaBeforeNonDigit(code: Int32Array, pos: Int32Array, m: number, oc: Int32Array, op: Int32Array): number {
  let k = 0;
  let i = 0;
  while (i < m) {
    const a = code[i];
    if (i + 1 < m && (a === 0x2e || a === 0x2c)) {
      const b = code[i + 1];
      if (!(b >= 0x30 && b <= 0x39)) {
        oc[k] = SPACE; op[k++] = -1;
        oc[k] = a; op[k++] = pos[i];
        oc[k] = SPACE; op[k++] = -1;
        oc[k] = b; op[k++] = pos[i + 1];
        i += 2;
        continue;
      }
    }
    oc[k] = a; op[k++] = pos[i];
    i++;
  }
  return k;
}

/** Pass 4, ([0-9])(-) → '\1 \2 '. */
function dashAfterDigit(code: Int32Array, pos: Int32Array, m: number, oc: Int32Array, op: Int32Array): number {
  let k = 0;
  let i = 0;
  while (i < m) {
    const a = code[i];
    if (i + 1 < m && a >= 0x30 && a <= 0x39 && code[i + 1] === 0x2d) {
      oc[k] = a; op[k++] = pos[i];
      oc[k] = SPACE; op[k++] = -1;
      oc[k] = 0x2d; op[k++] = pos[i + 1];
      oc[k] = SPACE; op[k++] = -1;
      i += 2;
      continue;
    }
    oc[k] = a; op[k++] = pos[i];
    i++;
  }
  return k;
}

/**
 * sacrebleu's TokenizerRegexp followed by split(), on a line that 13a has padded with spaces.
 *
 * After pass 1 every run of units between whitespace is either one padded symbol or a word. Passes
 * 2–4 only match inside a run or against the single whitespace unit next to it (as the non-digit
 * before a leading period/comma, or after a trailing one), and never consume a unit another run's
 * match needs; so runs are independent, and a run without '.', ',' or '-' comes out unchanged. Only
 * runs with those units are replayed, each between two spaces.
 */
function regexpTokens(line: string): string[] {
  const count = regexpRanges(line);
  const tokens: string[] = new Array(count);
  for (let k = 0; k < count; k++) tokens[k] = line.slice(ranges[2 * k], ranges[2 * k + 1]);
  return tokens;
}

/** Token boundaries of the last tokenization: token k is [ranges[2k], ranges[2k+1]). */
let ranges = new Int32Array(512);
let rangeCount = 0;

function pushRange(start: number, end: number): void {
  if (2 * rangeCount + 2 > ranges.length) {
    const r = new Int32Array(ranges.length * 2);
    r.set(ranges);
    ranges = r;
  }
  ranges[2 * rangeCount] = start;
  ranges[2 * rangeCount + 1] = end;
  rangeCount++;
}

/** regexpTokens as ranges into `line` (see `ranges`); returns the token count. */
function regexpRanges(line: string): number {
  rangeCount = 0;
  const n = line.length;
  let i = 0;
  while (i < n) {
    let c = line.charCodeAt(i);
    if (isPyWhitespace(c)) {
      i++;
      continue;
    }
    if (c < 128 && PASS1[c] === 1) {
      pushRange(i, i + 1);
      i++;
      continue;
    }
    const start = i;
    let special = false;
    while (i < n) {
      c = line.charCodeAt(i);
      if (c < 128) {
        if (PASS1[c] === 1 || ASCII_WS[c] === 1) break;
        if (c === 0x2e || c === 0x2c || c === 0x2d) special = true;
      } else if (isPyWhitespace(c)) break;
      i++;
    }
    if (special) replayRun(line, start, i);
    else pushRange(start, i);
  }
  return rangeCount;
}

/** Passes 2–4 on line[start, end) between two spaces, then split. */
function replayRun(line: string, start: number, end: number): void {
  const len = end - start + 2;
  ensure(8 * len + 16);
  const code = bufA;
  const pos = posA;
  const outCode = bufB;
  const outPos = posB;
  let m = 0;
  code[m] = SPACE; pos[m++] = -1;
  for (let i = start; i < end; i++) {
    code[m] = line.charCodeAt(i);
    pos[m++] = i;
  }
  code[m] = SPACE; pos[m++] = -1;
  m = periodCommaAfterNonDigit(code, pos, m, outCode, outPos);
  m = periodCommaBeforeNonDigit(outCode, outPos, m, code, pos);
  m = dashAfterDigit(code, pos, m, outCode, outPos);
  // Runs of input units; inserted spaces separate (the run itself has no whitespace).
  let i = 0;
  while (i < m) {
    while (i < m && outPos[i] < 0) i++;
    if (i >= m) break;
    const s = outPos[i];
    let e = s;
    while (i < m && outPos[i] >= 0) e = outPos[i++];
    pushRange(s, e + 1);
  }
}

/** 13a's language-independent part: the line that the regex passes then see (padded with spaces). */
function prepare13a(line: string): string {
  if (line.includes('<skipped>')) line = line.replaceAll('<skipped>', '');
  if (line.includes('\n')) line = line.replaceAll('-\n', '').replaceAll('\n', ' ');
  if (line.includes('&')) {
    line = line.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  }
  return ` ${line} `;
}

/**
 * 13a tokens as ranges, without a string per token: returns the prepared line; token k of it is
 * [ranges[2k], ranges[2k+1]) until the next call.
 */
export function tokenize13aRanges(line: string): { text: string; count: number; ranges: Int32Array } {
  const text = prepare13a(line);
  const count = regexpRanges(text);
  return { text, count, ranges };
}

/** mteval-v13a as sacrebleu's `13a` tokenizer does it (its default). */
export function tokenize13a(line: string): string[] {
  return regexpTokens(prepare13a(line));
}

// mteval-v14's international tokenization (sacrebleu's `intl`), on Unicode property classes.
const RE_INTL_PUNCT_AFTER_NONDIGIT = /(\P{N})(\p{P})/gu;
const RE_INTL_PUNCT_BEFORE_NONDIGIT = /(\p{P})(\P{N})/gu;
const RE_INTL_SYMBOL = /(\p{S})/gu;

export function tokenizeIntl(line: string): string[] {
  line = line
    .replace(RE_INTL_PUNCT_AFTER_NONDIGIT, '$1 $2 ')
    .replace(RE_INTL_PUNCT_BEFORE_NONDIGIT, ' $1 $2')
    .replace(RE_INTL_SYMBOL, ' $1 ');
  return pySplit(line);
}

/** Every code point that is not whitespace is a token (sacrebleu's `char`). */
export function tokenizeChar(line: string): string[] {
  const out: string[] = [];
  for (const ch of codePoints(line)) if (!isPyWhitespace(ch.charCodeAt(0))) out.push(ch);
  return out;
}

/** Whitespace splitting only (sacrebleu's `none`). */
export function tokenizeNone(line: string): string[] {
  return pySplit(line);
}

export const BLEU_TOKENIZERS: Record<BleuTokenizerName, BleuTokenizer> = {
  '13a': tokenize13a,
  intl: tokenizeIntl,
  char: tokenizeChar,
  none: tokenizeNone,
};
