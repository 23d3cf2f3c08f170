import { Tokenizer } from '@huggingface/tokenizers';
import { MAX_JSON_BYTES, PeftError, joinPath, parseJsonObject, readFileChecked, resolvePretrained, type FileSystem, type HubOptions } from '@peftjs/core';

export type PaddingSide = 'left' | 'right';

export interface EncodeOptions {
  /** Add the tokenizer's special tokens (BOS, …) as its post-processor says; default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** Default: tokenizer_config.json's clean_up_tokenization_spaces (true when absent, as HF). */
  cleanUpTokenizationSpaces?: boolean;
}

export interface BatchEncodeOptions extends EncodeOptions {
  /** true / 'longest': pad to the longest row; 'max_length': pad to maxLength; false: no padding (rows may differ). */
  padding?: boolean | 'longest' | 'max_length';
  /** Default: tokenizer_config.json's padding_side (right when absent). */
  paddingSide?: PaddingSide;
  /** Cut rows longer than maxLength (model_max_length when maxLength is absent); special tokens are kept. */
  truncation?: boolean;
  maxLength?: number;
}

export interface BatchEncoding {
  inputIds: number[][];
  attentionMask: number[][];
}

type Json = Record<string, unknown>;

/** Token ids above this are refused (the largest released vocabularies are about 2^18). */
export const MAX_TOKEN_ID = 1 << 24;

/** An error of the tokenizers library as a PeftError naming the file (its message may quote input: cut short). */
function wrapTokenizerError(e: unknown, source: string, what: string): PeftError {
  if (PeftError.isInstance(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new PeftError('INVALID_FILE', `${source}: ${what} failed in the tokenizer (${msg.slice(0, 120)})`, { cause: e });
}

/**
 * Checks what the tokenizers library would otherwise take on trust: added tokens are objects with an
 * integer id in range and string content. An added token id far above the vocabulary (1e9) would make
 * the library build a vocabulary of that size.
 */
function checkTokenizerJson(json: Json, source: string): void {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PeftError('INVALID_FILE', `${source}: not a JSON object`);
  const model = json.model as Json | undefined;
  if (!model || typeof model !== 'object' || Array.isArray(model)) throw new PeftError('INVALID_FILE', `${source}: no "model" object; not a tokenizer.json`);
  const vocab = model.vocab;
  const base = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === 'object' ? Object.keys(vocab).length : 0;
  if (vocab && typeof vocab === 'object' && !Array.isArray(vocab)) {
    for (const [tok, id] of Object.entries(vocab as Json)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= MAX_TOKEN_ID) {
        throw new PeftError('INVALID_FILE', `${source}: model.vocab entry ${JSON.stringify(tok.slice(0, 40))} must have an integer id from 0 to ${MAX_TOKEN_ID - 1}`);
      }
    }
  }
  const added = json.added_tokens;
  if (added === undefined || added === null) return;
  if (!Array.isArray(added)) throw new PeftError('INVALID_FILE', `${source}: field "added_tokens" must be a list`);
  const limit = Math.min(MAX_TOKEN_ID, base + added.length + 65536);
  added.forEach((t, i) => {
    if (!t || typeof t !== 'object' || Array.isArray(t)) throw new PeftError('INVALID_FILE', `${source}: added_tokens[${i}] must be an object`);
    const { id, content } = t as Json;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= limit) {
      throw new PeftError('INVALID_FILE', `${source}: added_tokens[${i}].id must be an integer from 0 to ${limit - 1} (the vocabulary has ${base} entries and ${added.length} added tokens; got ${typeof id === 'number' ? id : typeof id})`);
    }
    if (typeof content !== 'string' || content.length === 0) throw new PeftError('INVALID_FILE', `${source}: added_tokens[${i}].content must be a non-empty string`);
  });
}

/** A special token in tokenizer_config.json: a string or an AddedToken object `{ content, … }`. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

/**
 * A tokenizer from HF's tokenizer.json (and tokenizer_config.json for special tokens and padding side),
 * backed by @huggingface/tokenizers. `padTokenId` is writable: many causal LMs have no pad token and the
 * usual fix is `tok.padTokenId = tok.eosTokenId`.
 */
export class PreTrainedTokenizer {
  readonly tokenizer: Tokenizer;
  bosToken?: string;
  eosToken?: string;
  unkToken?: string;
  padToken?: string;
  bosTokenId?: number;
  eosTokenId?: number;
  unkTokenId?: number;
  padTokenId?: number;
  paddingSide: PaddingSide;
  truncationSide: PaddingSide;
  modelMaxLength: number;
  private readonly cleanUp: boolean;
  private readonly specialIds: Set<number>;
  private readonly source: string;
  private vocabCount?: number;

  constructor(tokenizerJson: Json, tokenizerConfig: Json = {}, source = 'tokenizer.json') {
    this.source = source;
    checkTokenizerJson(tokenizerJson, source);
    if (typeof tokenizerConfig !== 'object' || tokenizerConfig === null || Array.isArray(tokenizerConfig)) {
      throw new PeftError('INVALID_FILE', 'tokenizer_config.json: not a JSON object');
    }
    try {
      this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new PeftError('INVALID_FILE', `${source}: not a tokenizer this library can build (${e instanceof Error ? e.message.slice(0, 120) : 'error'})`, { cause: e });
    }
    const cfg = tokenizerConfig;
    const addedTokens = Array.isArray(tokenizerJson.added_tokens) ? (tokenizerJson.added_tokens as Json[]) : [];
    this.specialIds = new Set(addedTokens.filter((t) => t.special === true && typeof t.id === 'number').map((t) => t.id as number));
    const find = (key: string) => {
      const content = tokenContent(cfg[key]);
      if (content === undefined) return [undefined, undefined] as const;
      const id = this.call(`tokenizer_config.json "${key}" lookup`, () => this.tokenizer.token_to_id(content));
      return [content, id] as const;
    };
    [this.bosToken, this.bosTokenId] = find('bos_token');
    [this.eosToken, this.eosTokenId] = find('eos_token');
    [this.unkToken, this.unkTokenId] = find('unk_token');
    [this.padToken, this.padTokenId] = find('pad_token');
    for (const id of [this.bosTokenId, this.eosTokenId, this.unkTokenId, this.padTokenId]) if (id !== undefined) this.specialIds.add(id);
    const side = (key: string): PaddingSide => {
      const v = cfg[key];
      if (v === undefined || v === null) return 'right';
      if (v !== 'left' && v !== 'right') throw new PeftError('INVALID_CONFIG', `tokenizer_config.json: field "${key}" must be "left" or "right" (got ${typeof v === 'string' ? JSON.stringify(v.slice(0, 20)) : typeof v})`);
      return v;
    };
    this.paddingSide = side('padding_side');
    this.truncationSide = side('truncation_side');
    const mml = cfg.model_max_length;
    // HF writes a huge sentinel (1e30) when there is no limit
    this.modelMaxLength = typeof mml === 'number' && mml > 0 && mml < 1e12 ? mml : Number.MAX_SAFE_INTEGER;
    this.cleanUp = typeof cfg.clean_up_tokenization_spaces === 'boolean' ? cfg.clean_up_tokenization_spaces : true;
  }

  /** Runs a call into the tokenizers library; its errors become PeftErrors naming the file. */
  private call<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw wrapTokenizerError(e, this.source, what);
    }
  }

  private checkIds(ids: unknown, where: string): asserts ids is number[] {
    if (!Array.isArray(ids)) throw new PeftError('INVALID_ARGUMENT', `${where}: ids must be an array of integers`);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= MAX_TOKEN_ID) {
        throw new PeftError('INVALID_ARGUMENT', `${where}: ids[${i}] = ${typeof id === 'number' ? id : typeof id} is not a token id (an integer ≥ 0)`);
      }
    }
  }

  /** Number of ids, added tokens included. */
  get vocabSize(): number {
    return (this.vocabCount ??= this.call('get_vocab', () => this.tokenizer.get_vocab(true).size));
  }

  /** The ids of special tokens (added tokens marked special, and bos/eos/unk/pad). */
  get allSpecialIds(): number[] {
    return [...this.specialIds];
  }

  tokenize(text: string): string[] {
    if (typeof text !== 'string') throw new PeftError('INVALID_ARGUMENT', `tokenize: text must be a string, got ${typeof text}`);
    return this.call('tokenize', () => this.tokenizer.tokenize(text));
  }

  tokenToId(token: string): number | undefined {
    if (typeof token !== 'string') throw new PeftError('INVALID_ARGUMENT', `tokenToId: token must be a string, got ${typeof token}`);
    return this.call('token_to_id', () => this.tokenizer.token_to_id(token));
  }

  idToToken(id: number): string | undefined {
    this.checkIds([id], 'idToToken');
    return this.call('id_to_token', () => this.tokenizer.id_to_token(id));
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new PeftError('INVALID_ARGUMENT', `encode: text must be a string, got ${typeof text}`);
    return this.call('encode', () => this.tokenizer.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids);
  }

  decode(ids: number[], opts: DecodeOptions = {}): string {
    this.checkIds(ids, 'decode');
    if (ids.length === 0) return '';
    let list = ids;
    // skip by id as well: bos/eos/pad named in tokenizer_config.json may not be marked special in tokenizer.json
    if (opts.skipSpecialTokens) list = ids.filter((i) => !this.specialIds.has(i));
    if (list.length === 0) return '';
    return this.call('decode', () =>
      this.tokenizer.decode(list, {
        skip_special_tokens: !!opts.skipSpecialTokens,
        clean_up_tokenization_spaces: opts.cleanUpTokenizationSpaces ?? this.cleanUp,
      }),
    );
  }

  /** Decodes each row. */
  batchDecode(rows: number[][], opts: DecodeOptions = {}): string[] {
    return rows.map((r) => this.decode(r, opts));
  }

  /** Encodes one text cut to `max` ids, keeping the special tokens the post-processor adds (as HF truncates). */
  private encodeTruncated(text: string, addSpecial: boolean, max: number): number[] {
    const full = this.encode(text, { addSpecialTokens: addSpecial });
    if (full.length <= max) return full;
    const plain = addSpecial ? this.encode(text, { addSpecialTokens: false }) : full;
    // locate the plain ids inside the full encoding: what is around them are the added special tokens
    let start = 0;
    if (addSpecial) {
      for (start = 0; start + plain.length <= full.length; start++) {
        let ok = true;
        for (let j = 0; j < plain.length && ok; j++) ok = full[start + j] === plain[j];
        if (ok) break;
      }
      if (start + plain.length > full.length) start = 0;
    }
    const prefix = addSpecial ? full.slice(0, start) : [];
    const suffix = addSpecial ? full.slice(start + plain.length) : [];
    const room = Math.max(0, max - prefix.length - suffix.length);
    const body = this.truncationSide === 'left' ? plain.slice(plain.length - room) : plain.slice(0, room);
    return [...prefix, ...(room === 0 ? [] : body), ...suffix].slice(0, max);
  }

  /** Encodes a batch, padded to one length (padding side from the options or tokenizer_config.json). */
  batchEncode(texts: string[], opts: BatchEncodeOptions = {}): BatchEncoding {
    if (!Array.isArray(texts)) throw new PeftError('INVALID_ARGUMENT', 'batchEncode: texts must be an array of strings');
    const addSpecial = opts.addSpecialTokens ?? true;
    const padding = opts.padding === true ? 'longest' : opts.padding || false;
    const side = opts.paddingSide ?? this.paddingSide;
    if (opts.maxLength !== undefined && (!Number.isInteger(opts.maxLength) || opts.maxLength <= 0)) {
      throw new PeftError('INVALID_ARGUMENT', `batchEncode: maxLength must be a positive integer, got ${opts.maxLength}`);
    }
    const max = opts.maxLength ?? this.modelMaxLength;
    const rows = texts.map((t) => (opts.truncation ? this.encodeTruncated(t, addSpecial, max) : this.encode(t, { addSpecialTokens: addSpecial })));
    if (!padding) return { inputIds: rows, attentionMask: rows.map((r) => r.map(() => 1)) };
    if (padding === 'max_length' && opts.maxLength === undefined) {
      throw new PeftError('INVALID_ARGUMENT', "batchEncode: padding 'max_length' needs maxLength");
    }
    if (this.padTokenId === undefined) {
      throw new PeftError(
        'INVALID_ARGUMENT',
        'batchEncode: this tokenizer has no pad token (tokenizer_config.json "pad_token"); set tok.padTokenId (e.g. to tok.eosTokenId) before padding',
      );
    }
    const target = padding === 'max_length' ? Math.max(max, ...rows.map((r) => r.length)) : Math.max(0, ...rows.map((r) => r.length));
    const pad = this.padTokenId;
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (const r of rows) {
      const n = target - r.length;
      const fill = new Array<number>(n).fill(pad);
      const zeros = new Array<number>(n).fill(0);
      const ones = new Array<number>(r.length).fill(1);
      inputIds.push(side === 'left' ? [...fill, ...r] : [...r, ...fill]);
      attentionMask.push(side === 'left' ? [...zeros, ...ones] : [...ones, ...zeros]);
    }
    return { inputIds, attentionMask };
  }
}

/** HF's AutoTokenizer for tokenizer.json-based (fast) tokenizers. */
export class AutoTokenizer {
  /** `dir`: a folder, a URL, or a hub id `org/name` read from the HF hub cache (see HubOptions). */
  static async fromPretrained(nameOrPath: string, opts: { fs?: FileSystem } & HubOptions = {}): Promise<PreTrainedTokenizer> {
    const { dir, fs } = await resolvePretrained(nameOrPath, 'tokenizer', opts);
    const path = joinPath(dir, 'tokenizer.json');
    if (!(await fs.exists(path))) {
      throw new PeftError('FILE_NOT_FOUND', `tokenizer.json not found: ${path} (only tokenizer.json-based tokenizers are supported)`);
    }
    const json = parseJsonObject(await readFileChecked(path, fs, MAX_JSON_BYTES, 'the JSON size limit'), path);
    if (!json.model || typeof json.model !== 'object') throw new PeftError('INVALID_FILE', `${path}: no "model" object; not a tokenizer.json`);
    const cfgPath = joinPath(dir, 'tokenizer_config.json');
    const cfg = (await fs.exists(cfgPath)) ? parseJsonObject(await readFileChecked(cfgPath, fs, MAX_JSON_BYTES, 'the JSON size limit'), cfgPath) : {};
    return new PreTrainedTokenizer(json, cfg, path);
  }
}
