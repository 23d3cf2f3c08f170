// sacrebleu 2.6.0's tokenizers, reproduced so that tokens (and so BLEU) match it exactly.
// Each returns the token list that sacrebleu gets from `tokenizer(line).split()`.
import { codePoints, isPyWhitespace, pySplit } from './pytext';

export type BleuTokenizerName = '13a' | 'intl' | 'char' | 'none';
export type BleuTokenizer = (line: string) => string[];

// The regex passes of sacrebleu's TokenizerRegexp (mteval-v13a's language-dependent part). JS's
// String.replace with a global regex finds the same leftmost non-overlapping matches as Python's re.sub.
// Pass 1 pads ASCII punctuation and symbols except ' , - . (the class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`).
const RE_13A_SYMBOLS = /([{-~[-` -&(-+:-@/])/g;
const RE_13A_PERIOD_AFTER_NONDIGIT = /([^0-9])([.,])/g;
const RE_13A_PERIOD_BEFORE_NONDIGIT = /([.,])([^0-9])/g;
const RE_13A_DASH_AFTER_DIGIT = /([0-9])(-)/g;

// Which ASCII code units can start a change in any of the four passes; a line with none of them
// (and no '.', ',' or '-' next to the right neighbours) needs no regex work.
const TOUCHED = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  if (/[{-~[-`!-&(-+:-@/.,-]/.test(ch)) TOUCHED[c] = 1;
}

function needsRegexPasses(line: string): boolean {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c < 128 && TOUCHED[c] === 1) return true;
  }
  return false;
}

/** sacrebleu's TokenizerRegexp on a line (that 13a has already padded with spaces). */
function regexpTokens(line: string): string[] {
  if (needsRegexPasses(line)) {
    line = line
      .replace(RE_13A_SYMBOLS, ' $1 ')
      .replace(RE_13A_PERIOD_AFTER_NONDIGIT, '$1 $2 ')
      .replace(RE_13A_PERIOD_BEFORE_NONDIGIT, ' $1 $2')
      .replace(RE_13A_DASH_AFTER_DIGIT, '$1 $2 ');
  }
  return pySplit(line);
}

/** mteval-v13a as sacrebleu's `13a` tokenizer does it (its default). */
export function tokenize13a(line: string): string[] {
  if (line.includes('<skipped>')) line = line.replaceAll('<skipped>', '');
  if (line.includes('\n')) line = line.replaceAll('-\n', '').replaceAll('\n', ' ');
  if (line.includes('&')) {
    line = line.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  }
  return regexpTokens(` ${line} `);
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
