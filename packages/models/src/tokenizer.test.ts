import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { PeftError } from '@peftjs/core';
import { AutoTokenizer, PreTrainedTokenizer } from '@peftjs/models';
import { folderInMemory, memoryFs } from './test-helpers';

const DIR = fileURLToPath(new URL('../test-data/tiny-bpe/', import.meta.url));
const load = () => AutoTokenizer.fromPretrained(DIR);

describe('AutoTokenizer on a byte-level BPE tokenizer.json', () => {
  it('reads special tokens and padding side from tokenizer_config.json', async () => {
    const tok = await load();
    expect(tok.bosToken).toBe('<s>');
    expect(tok.bosTokenId).toBe(376);
    expect(tok.eosTokenId).toBe(377);
    expect(tok.padTokenId).toBe(378);
    expect(tok.paddingSide).toBe('left');
    expect(tok.modelMaxLength).toBe(64);
    expect(tok.vocabSize).toBe(379);
  });

  it('encode applies the merges and the post-processor; decode inverts it', async () => {
    const tok = await load();
    const ids = tok.encode('The fox and the model');
    expect(ids[0]).toBe(tok.bosTokenId);
    expect(tok.tokenize('The fox and the model')).toEqual(['The', 'Ġfox', 'Ġand', 'Ġthe', 'Ġmodel']);
    expect(tok.encode('The fox and the model', { addSpecialTokens: false })).toEqual(ids.slice(1));
    expect(tok.decode(ids)).toBe('<s>The fox and the model');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('The fox and the model');
    expect(tok.decode([])).toBe('');
  });

  it('round-trips any text through bytes (unicode, emoji, digits, whitespace)', async () => {
    const tok = await load();
    for (const s of ['héllo wörld 😀 2024!', "It's the model's weights", '  two  spaces\nnew line\ttab', '日本語のテキスト', '']) {
      expect(tok.decode(tok.encode(s, { addSpecialTokens: false }))).toBe(s);
    }
  });

  it('special tokens in text are kept whole; skipSpecialTokens drops bos/eos/pad', async () => {
    const tok = await load();
    const ids = tok.encode('hi</s><pad>', { addSpecialTokens: false });
    expect(ids.slice(-2)).toEqual([377, 378]);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('hi');
  });

  it('batchEncode pads left (config default) or right, with attention masks', async () => {
    const tok = await load();
    const a = tok.encode('The fox');
    const b = tok.encode('The lazy dog sleeps');
    const left = tok.batchEncode(['The fox', 'The lazy dog sleeps'], { padding: true });
    const n = b.length - a.length;
    expect(left.inputIds[0]).toEqual([...new Array(n).fill(378), ...a]);
    expect(left.attentionMask[0]).toEqual([...new Array(n).fill(0), ...a.map(() => 1)]);
    expect(left.inputIds[1]).toEqual(b);
    expect(left.attentionMask[1].every((x) => x === 1)).toBe(true);
    const right = tok.batchEncode(['The fox', 'The lazy dog sleeps'], { padding: true, paddingSide: 'right' });
    expect(right.inputIds[0]).toEqual([...a, ...new Array(n).fill(378)]);
    expect(right.attentionMask[0]).toEqual([...a.map(() => 1), ...new Array(n).fill(0)]);
    const fixed = tok.batchEncode(['The fox'], { padding: 'max_length', maxLength: 10 });
    expect(fixed.inputIds[0]).toHaveLength(10);
    const none = tok.batchEncode(['The fox', 'The lazy dog sleeps']);
    expect(none.inputIds).toEqual([a, b]);
  });

  it('truncation keeps the special tokens and honours maxLength', async () => {
    const tok = await load();
    const text = 'The quick brown fox jumps over the lazy dog';
    const full = tok.encode(text);
    const out = tok.batchEncode([text, 'The fox'], { padding: true, truncation: true, maxLength: 5, paddingSide: 'right' });
    expect(out.inputIds[0]).toEqual(full.slice(0, 5));
    expect(out.inputIds[0][0]).toBe(tok.bosTokenId);
    expect(out.inputIds.every((r) => r.length === 5)).toBe(true);
    tok.truncationSide = 'left';
    const leftCut = tok.batchEncode([text], { truncation: true, maxLength: 4 });
    expect(leftCut.inputIds[0]).toEqual([tok.bosTokenId, ...full.slice(-3)]);
  });

  it('padding without a pad token is a clear error; setting padTokenId fixes it', async () => {
    const { files, dir } = folderInMemory(DIR, 'tok');
    const cfg = JSON.parse(new TextDecoder().decode(files.get(`${dir}/tokenizer_config.json`)));
    delete cfg.pad_token;
    files.set(`${dir}/tokenizer_config.json`, new TextEncoder().encode(JSON.stringify(cfg)));
    const tok = await AutoTokenizer.fromPretrained(dir, { fs: memoryFs(files) });
    expect(tok.padTokenId).toBeUndefined();
    expect(() => tok.batchEncode(['a', 'bb'], { padding: true })).toThrow(/no pad token/);
    tok.padTokenId = tok.eosTokenId;
    expect(tok.batchEncode(['a', 'bbb'], { padding: true }).inputIds[0][0]).toBe(377);
  });

  it('works without tokenizer_config.json (no special tokens, right padding)', async () => {
    const { files, dir } = folderInMemory(DIR, 'tok');
    files.delete(`${dir}/tokenizer_config.json`);
    const tok = await AutoTokenizer.fromPretrained(dir, { fs: memoryFs(files) });
    expect(tok.paddingSide).toBe('right');
    expect(tok.eosTokenId).toBeUndefined();
    expect(tok.decode(tok.encode('fox', { addSpecialTokens: false }))).toBe('fox');
  });

  it('errors name the file', async () => {
    await expect(AutoTokenizer.fromPretrained('/no/such/dir')).rejects.toThrow(/tokenizer\.json not found: \/no\/such\/dir\/tokenizer\.json/);
    const { files, dir } = folderInMemory(DIR, 'tok');
    files.set(`${dir}/tokenizer.json`, new TextEncoder().encode('{"model": '));
    const e = await AutoTokenizer.fromPretrained(dir, { fs: memoryFs(files) }).catch((x) => x);
    expect(PeftError.isInstance(e)).toBe(true);
    expect(e.code).toBe('INVALID_FILE');
    expect(e.message).toContain(`${dir}/tokenizer.json`);
    files.set(`${dir}/tokenizer.json`, new TextEncoder().encode('{"version": "1.0"}'));
    await expect(AutoTokenizer.fromPretrained(dir, { fs: memoryFs(files) })).rejects.toThrow(/no "model" object/);
    files.set(`${dir}/tokenizer.json`, new TextEncoder().encode('{"model": {"type": "Nonsense"}, "added_tokens": []}'));
    await expect(AutoTokenizer.fromPretrained(dir, { fs: memoryFs(files) })).rejects.toThrow(/tokenizer\.json/);
    const json = JSON.parse(new TextDecoder().decode(folderInMemory(DIR, 'tok').files.get(`${dir}/tokenizer.json`)));
    expect(() => new PreTrainedTokenizer(json, { padding_side: 'middle' })).toThrow(/tokenizer_config\.json: field "padding_side"/);
  });
});
