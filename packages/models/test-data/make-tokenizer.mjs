// Writes a small real byte-level BPE tokenizer (GPT-2 style) for the tokenizer tests:
//   node packages/models/test-data/make-tokenizer.mjs
// The merges are learned here from a short corpus (no downloads); the output is committed.
import { writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const out = fileURLToPath(new URL('./tiny-bpe/', import.meta.url));
const NUM_MERGES = 120;

const corpus = `The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.
Parameter-efficient fine-tuning trains a small part of a large model. Low-rank adapters add two small
matrices to each attention projection, and the rest of the model stays frozen. Prompt tuning learns a few
virtual tokens; prefix tuning learns keys and values for every layer. The adapter is saved in a file of a
few megabytes and can be merged into the base model later. Training the adapter is fast, and the model
keeps what it knew. It's the model's weights that we don't change: they're frozen, we'll train the rest.
Numbers like 2024, 3.14 and 1000 appear too, as do symbols: (a + b) * c = d!`;

// GPT-2's reversible byte → printable-character map.
function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  return new Map(bs.map((b, i) => [b, String.fromCharCode(cs[i])]));
}

const byteMap = bytesToUnicode();
const PAT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const enc = new TextEncoder();
const words = new Map();
for (const m of corpus.matchAll(PAT)) {
  const w = [...enc.encode(m[0])].map((b) => byteMap.get(b)).join('');
  words.set(w, (words.get(w) ?? 0) + 1);
}

// vocab: the 256 byte symbols in byte order, then one token per merge
const vocab = {};
for (let b = 0; b < 256; b++) vocab[byteMap.get(b)] = b;
const splits = new Map([...words.keys()].map((w) => [w, [...w]]));
const merges = [];
for (let k = 0; k < NUM_MERGES; k++) {
  const pairs = new Map();
  for (const [w, count] of words) {
    const s = splits.get(w);
    for (let i = 0; i + 1 < s.length; i++) {
      const key = `${s[i]}\u0000${s[i + 1]}`;
      pairs.set(key, (pairs.get(key) ?? 0) + count);
    }
  }
  if (pairs.size === 0) break;
  // most frequent pair; ties broken by the pair's text so the result is deterministic
  const [best] = [...pairs.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0];
  const [a, b] = best.split('\u0000');
  merges.push([a, b]);
  vocab[a + b] = Object.keys(vocab).length;
  for (const [w, s] of splits) {
    const next = [];
    for (let i = 0; i < s.length; i++) {
      if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
        next.push(a + b);
        i++;
      } else next.push(s[i]);
    }
    splits.set(w, next);
  }
}

const base = Object.keys(vocab).length;
const special = ['<s>', '</s>', '<pad>'];
const added = special.map((content, i) => ({ id: base + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
const bos = added[0];

const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: added,
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: '<s>', type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '<s>', type_id: 1 } },
      { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { '<s>': { id: '<s>', ids: [bos.id], tokens: ['<s>'] } },
  },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges,
  },
};

const config = {
  tokenizer_class: 'PreTrainedTokenizerFast',
  bos_token: '<s>',
  eos_token: '</s>',
  pad_token: '<pad>',
  padding_side: 'left',
  model_max_length: 64,
  clean_up_tokenization_spaces: false,
  added_tokens_decoder: Object.fromEntries(added.map(({ id, ...rest }) => [String(id), rest])),
};

mkdirSync(out, { recursive: true });
writeFileSync(`${out}tokenizer.json`, JSON.stringify(tokenizer, null, 2) + '\n');
writeFileSync(`${out}tokenizer_config.json`, JSON.stringify(config, null, 2) + '\n');
console.log(`wrote ${out}: ${base} tokens + ${special.length} special, ${merges.length} merges`);
