import { PeftError, getFileSystem, mulberry32, type FileSystem } from '@peftjs/core';

/** One pre-tokenized example; `attentionMask` defaults to ones, `labels` to `inputIds`. */
export interface Example {
  inputIds: number[];
  attentionMask?: number[];
  labels?: number[];
}

/** A padded batch (number[][], so the model converts it once). */
export interface Batch {
  inputIds: number[][];
  attentionMask: number[][];
  labels: number[][];
}

export type DataCollator = (examples: Example[]) => Batch;

/** What the loaders need of a tokenizer (`@peftjs/models`' PreTrainedTokenizer fits). */
export interface TokenizerLike {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  eosTokenId?: number;
  bosTokenId?: number;
  padTokenId?: number;
  paddingSide?: 'left' | 'right';
}

export const IGNORE_INDEX = -100;

export interface CollatorOptions {
  /** Pad id for inputIds (default: 0). Padding positions get attentionMask 0 and label -100. */
  padTokenId?: number;
  paddingSide?: 'left' | 'right';
  /** Round the padded length up to a multiple of this. */
  padToMultipleOf?: number;
  /** Cut rows to at most this many tokens. */
  maxLength?: number;
  /**
   * The model's vocabulary size: inputIds must then be ids below it, and labels such ids or -100
   * (the Trainer sets it for causal LMs). A label of -5 or ≥ vocab would otherwise fail deep in the
   * loss or silently give a wrong one.
   */
  vocabSize?: number;
}

/**
 * Checks a batch's ids on the host (no GPU read): inputIds integers in [0, vocabSize), labels -100 or
 * in [0, vocabSize). Throws INVALID_ARGUMENT naming the example and position.
 */
export function checkBatchIds(batch: Batch, vocabSize: number, where = 'dataCollator'): void {
  const check = (rows: number[][], field: string, allowIgnore: boolean) => {
    if (!Array.isArray(rows)) throw new PeftError('INVALID_ARGUMENT', `${where}: ${field} must be an array of rows`);
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (!Array.isArray(r)) throw new PeftError('INVALID_ARGUMENT', `${where}: ${field}[${i}] must be an array of token ids`);
      for (let j = 0; j < r.length; j++) {
        const v = r[j];
        if (typeof v === 'number' && Number.isInteger(v) && ((v >= 0 && v < vocabSize) || (allowIgnore && v === IGNORE_INDEX))) continue;
        throw new PeftError(
          'INVALID_ARGUMENT',
          `${where}: ${field}[${i}][${j}] = ${typeof v === 'number' ? v : typeof v} is not ${allowIgnore ? '-100 (ignored) or ' : ''}a token id in [0, ${vocabSize}) (the model's vocab_size)`,
        );
      }
    }
  };
  check(batch.inputIds, 'inputIds', false);
  check(batch.labels, 'labels', true);
}

/**
 * Dynamic padding: each batch is padded to its longest row (HF's DataCollatorWithPadding plus labels,
 * i.e. DataCollatorForSeq2Seq's behaviour). Rows already of one length are used exactly as given.
 */
export function dataCollatorWithPadding(opts: CollatorOptions = {}): DataCollator {
  const pad = opts.padTokenId ?? 0;
  const side = opts.paddingSide ?? 'right';
  return (examples) => {
    if (!examples.length) throw new PeftError('INVALID_ARGUMENT', 'dataCollator: empty batch');
    const rows = examples.map((e, i) => {
      if (!e || !Array.isArray(e.inputIds)) throw new PeftError('INVALID_ARGUMENT', `dataCollator: example ${i} has no inputIds array`);
      let ids = e.inputIds;
      let mask = e.attentionMask ?? ids.map(() => 1);
      let labels = e.labels ?? ids.map((id, j) => (mask[j] ? id : IGNORE_INDEX));
      if (mask.length !== ids.length) throw new PeftError('INVALID_ARGUMENT', `dataCollator: example ${i}: attentionMask has ${mask.length} entries for ${ids.length} inputIds`);
      if (labels.length !== ids.length) throw new PeftError('INVALID_ARGUMENT', `dataCollator: example ${i}: labels has ${labels.length} entries for ${ids.length} inputIds`);
      if (opts.maxLength && ids.length > opts.maxLength) {
        ids = ids.slice(0, opts.maxLength);
        mask = mask.slice(0, opts.maxLength);
        labels = labels.slice(0, opts.maxLength);
      }
      return { ids, mask, labels };
    });
    let len = Math.max(...rows.map((r) => r.ids.length));
    if (opts.padToMultipleOf) len = Math.ceil(len / opts.padToMultipleOf) * opts.padToMultipleOf;
    const fill = <T>(a: number[], v: number): number[] => {
      const p = new Array<number>(len - a.length).fill(v);
      return side === 'right' ? [...a, ...p] : [...p, ...a];
    };
    const batch = {
      inputIds: rows.map((r) => (r.ids.length === len ? r.ids : fill(r.ids, pad))),
      attentionMask: rows.map((r) => (r.mask.length === len ? r.mask : fill(r.mask, 0))),
      labels: rows.map((r) => (r.labels.length === len ? r.labels : fill(r.labels, IGNORE_INDEX))),
    };
    if (opts.vocabSize !== undefined) checkBatchIds(batch, opts.vocabSize);
    return batch;
  };
}

/** Number of label tokens the loss counts in a batch: labels shifted by one, -100 ignored. */
export function countLabelTokens(batch: Batch): number {
  let n = 0;
  for (const row of batch.labels) for (let j = 1; j < row.length; j++) if (row[j] !== IGNORE_INDEX) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Seeded shuffling

/** The example order of one epoch: 0..n-1, or a Fisher–Yates shuffle seeded by (seed, epoch). */
export function epochOrder(n: number, epoch: number, seed: number, shuffle: boolean): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  if (!shuffle) return idx;
  const rand = mulberry32((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}

// ---------------------------------------------------------------------------------------------
// Text datasets: JSONL / JSON / CSV → examples

export type TextRecord = Record<string, unknown>;

export interface ChatMessage {
  role: string;
  content: string;
}

export interface TokenizeOptions {
  tokenizer: TokenizerLike;
  /** Truncate every example to this many tokens (default 512). With packing: the block size. */
  maxLength?: number;
  /**
   * The record's shape: 'text' ({ text }), 'prompt-completion' ({ prompt, completion }), 'chat'
   * ({ messages: [{ role, content }] }); 'auto' (default) decides per record from its fields.
   */
  format?: 'auto' | 'text' | 'prompt-completion' | 'chat';
  textField?: string;
  promptField?: string;
  completionField?: string;
  messagesField?: string;
  /** Labels -100 on the prompt (prompt → completion) or on non-assistant turns (chat). Default true (TRL's completion_only_loss). */
  completionOnlyLoss?: boolean;
  /** Append the EOS token to each example (default true when the tokenizer has one). */
  addEos?: boolean;
  /**
   * Formats a chat as text segments; each segment is trained on when `train` is true. Default: ChatML
   * (`<|im_start|>role\ncontent<|im_end|>\n`), the assistant's content and end marker trained on.
   */
  chatTemplate?: (messages: ChatMessage[]) => { text: string; train: boolean }[];
  /** Concatenate all examples (each ending in EOS) and cut into blocks of maxLength (TRL's packing). */
  packing?: boolean;
}

/** ChatML, the default chat template. */
export function chatMlTemplate(messages: ChatMessage[]): { text: string; train: boolean }[] {
  const out: { text: string; train: boolean }[] = [];
  for (const m of messages) {
    const assistant = m.role === 'assistant';
    out.push({ text: `<|im_start|>${m.role}\n`, train: false });
    out.push({ text: `${m.content}<|im_end|>`, train: assistant });
    out.push({ text: '\n', train: false });
  }
  return out;
}

function field(rec: TextRecord, name: string, i: number, source: string): string {
  const v = rec[name];
  if (typeof v !== 'string') throw new PeftError('INVALID_FILE', `${source}: record ${i}: field "${name}" must be a string (got ${v === undefined ? 'nothing' : typeof v})`);
  return v;
}

/** Tokenizes text records as the three shapes, with truncation (and optional packing). */
export function tokenizeRecords(records: TextRecord[], opts: TokenizeOptions, source = 'dataset'): Example[] {
  const tok = opts.tokenizer;
  const maxLength = opts.maxLength ?? 512;
  const onlyCompletion = opts.completionOnlyLoss ?? true;
  const eos = (opts.addEos ?? true) && tok.eosTokenId !== undefined ? [tok.eosTokenId] : [];
  const tf = opts.textField ?? 'text';
  const pf = opts.promptField ?? 'prompt';
  const cf = opts.completionField ?? 'completion';
  const mf = opts.messagesField ?? 'messages';
  const out: Example[] = [];
  records.forEach((rec, i) => {
    if (!rec || typeof rec !== 'object') throw new PeftError('INVALID_FILE', `${source}: record ${i} is not an object`);
    let fmt = opts.format ?? 'auto';
    if (fmt === 'auto') {
      if (Array.isArray(rec[mf])) fmt = 'chat';
      else if (pf in rec && cf in rec) fmt = 'prompt-completion';
      else if (tf in rec) fmt = 'text';
      else throw new PeftError('INVALID_FILE', `${source}: record ${i} has none of the fields "${tf}", "${pf}"+"${cf}", "${mf}" (fields: ${Object.keys(rec).join(', ')})`);
    }
    let ids: number[];
    let labels: number[];
    if (fmt === 'text') {
      ids = [...tok.encode(field(rec, tf, i, source)), ...eos];
      labels = ids.slice();
    } else if (fmt === 'prompt-completion') {
      const p = tok.encode(field(rec, pf, i, source));
      const c = [...tok.encode(field(rec, cf, i, source), { addSpecialTokens: false }), ...eos];
      ids = [...p, ...c];
      labels = [...p.map((x) => (onlyCompletion ? IGNORE_INDEX : x)), ...c];
    } else {
      const msgs = rec[mf];
      if (!Array.isArray(msgs) || !msgs.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string')) {
        throw new PeftError('INVALID_FILE', `${source}: record ${i}: field "${mf}" must be an array of { role, content } strings`);
      }
      const segs = (opts.chatTemplate ?? chatMlTemplate)(msgs as ChatMessage[]);
      ids = tok.bosTokenId !== undefined ? [tok.bosTokenId] : [];
      labels = ids.map(() => IGNORE_INDEX);
      for (const s of segs) {
        const t = tok.encode(s.text, { addSpecialTokens: false });
        ids.push(...t);
        labels.push(...t.map((x) => (s.train || !onlyCompletion ? x : IGNORE_INDEX)));
      }
      ids.push(...eos);
      labels.push(...eos);
    }
    if (!opts.packing && ids.length > maxLength) {
      ids = ids.slice(0, maxLength);
      labels = labels.slice(0, maxLength);
    }
    out.push({ inputIds: ids, attentionMask: ids.map(() => 1), labels });
  });
  return opts.packing ? packExamples(out, maxLength) : out;
}

/** Concatenates examples and cuts them into blocks of `blockSize` (the remainder is kept as a shorter block). */
export function packExamples(examples: Example[], blockSize: number): Example[] {
  const ids: number[] = [];
  const labels: number[] = [];
  for (const e of examples) {
    ids.push(...e.inputIds);
    labels.push(...(e.labels ?? e.inputIds));
  }
  const out: Example[] = [];
  for (let i = 0; i < ids.length; i += blockSize) {
    const b = ids.slice(i, i + blockSize);
    out.push({ inputIds: b, attentionMask: b.map(() => 1), labels: labels.slice(i, i + blockSize) });
  }
  return out;
}

/** Parses JSONL (one object per line), a JSON array (or `{ data: [...] }`), or CSV with a header row. */
export function parseRecords(text: string, format: 'jsonl' | 'json' | 'csv', source = 'dataset'): TextRecord[] {
  if (format === 'jsonl') {
    const out: TextRecord[] = [];
    text.split(/\r?\n/).forEach((line, i) => {
      if (!line.trim()) return;
      try {
        out.push(JSON.parse(line));
      } catch (e) {
        throw new PeftError('INVALID_FILE', `${source}: line ${i + 1} is not valid JSON (${(e as Error).message})`);
      }
    });
    return out;
  }
  if (format === 'json') {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new PeftError('INVALID_FILE', `${source}: invalid JSON (${(e as Error).message})`);
    }
    if (Array.isArray(v)) return v as TextRecord[];
    if (v && typeof v === 'object' && Array.isArray((v as TextRecord).data)) return (v as { data: TextRecord[] }).data;
    throw new PeftError('INVALID_FILE', `${source}: expected a JSON array of records (or { "data": [...] })`);
  }
  return parseCsv(text, source);
}

/** RFC 4180 CSV: quoted fields, "" escapes, newlines inside quotes; the first row names the fields. */
export function parseCsv(text: string, source = 'dataset'): TextRecord[] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i++;
        } else quoted = false;
      } else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(cell);
      cell = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += ch;
  }
  if (quoted) throw new PeftError('INVALID_FILE', `${source}: unterminated quoted field`);
  if (cell || row.length) {
    row.push(cell);
    rows.push(row);
  }
  const nonEmpty = rows.filter((r) => !(r.length === 1 && r[0] === ''));
  if (!nonEmpty.length) return [];
  const [header, ...body] = nonEmpty;
  return body.map((r, i) => {
    if (r.length !== header.length) throw new PeftError('INVALID_FILE', `${source}: row ${i + 2} has ${r.length} fields, the header has ${header.length}`);
    return Object.fromEntries(header.map((h, j) => [h, r[j]]));
  });
}

export interface LoadDatasetOptions extends TokenizeOptions {
  /** Default: from the extension (.jsonl, .json, .csv). */
  fileFormat?: 'jsonl' | 'json' | 'csv';
  fs?: FileSystem;
}

/** Reads a JSONL / JSON / CSV file of text, prompt → completion or chat records and tokenizes it. */
export async function loadTextDataset(path: string, opts: LoadDatasetOptions): Promise<Example[]> {
  const fs = opts.fs ?? getFileSystem();
  const fileFormat = opts.fileFormat ?? (/\.jsonl$/i.test(path) ? 'jsonl' : /\.json$/i.test(path) ? 'json' : /\.csv$/i.test(path) ? 'csv' : undefined);
  if (!fileFormat) throw new PeftError('INVALID_ARGUMENT', `${path}: cannot tell the format from the extension; pass fileFormat 'jsonl', 'json' or 'csv'`);
  const text = new TextDecoder().decode(await fs.readFile(path));
  return tokenizeRecords(parseRecords(text, fileFormat, path), opts, path);
}
