// transformers' bitsandbytes 4-bit checkpoint layout: a file made as transformers saves one
// (tools/reference/bnb4bit_ref.py --checkpoint: NumPy quantisation, json.dumps of the quant state)
// loads with its codes unchanged and dequantises to the reference's weights; saving it again writes
// the same tensors byte for byte and the same quantization_config; a round trip from a bf16
// checkpoint keeps codes and logits; broken files are refused naming the tensor.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { BitsAndBytesConfig, Linear4bit, pyFloat, saveQuantizedPretrained } from './index';

const fixture = new URL('../fixtures/bnb4bit_llama/', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-quant-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const sha = (a: ArrayBufferView) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
const readConfig = (d: string) => JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
const fromFile = (d: string) => AutoModelForCausalLM.fromPretrained(d, { quantizationConfig: BitsAndBytesConfig.fromDict(readConfig(d).quantization_config) });

describe("transformers' bitsandbytes 4-bit layout", () => {
  it('a file made as transformers saves it loads directly: codes unchanged, weights equal the reference dequantisation', async () => {
    const model = await fromFile(fixture);
    const expected = JSON.parse(readFileSync(join(fixture, 'expected.json'), 'utf8')).dequantSha256 as Record<string, string>;
    const layers = [...model.namedModules()].filter(([, m]) => m instanceof Linear4bit) as [string, Linear4bit][];
    expect(layers.map(([n]) => n).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, l] of layers) {
      const w = l.dequantize();
      expect(sha(await w.data()), name).toBe(expected[name]);
      w.dispose();
    }
    // saved again: every tensor byte for byte as in the file, and the same quantization_config
    const out = join(tmp, 'resaved');
    await saveQuantizedPretrained(model, out);
    const a = parseSafetensors(new Uint8Array(readFileSync(join(fixture, 'model.safetensors'))));
    const b = parseSafetensors(new Uint8Array(readFileSync(join(out, 'model.safetensors'))));
    expect(Object.keys(b.tensors).sort()).toEqual(Object.keys(a.tensors).sort());
    for (const [k, t] of Object.entries(a.tensors)) {
      expect(b.tensors[k].dtype, k).toBe(t.dtype);
      expect(b.tensors[k].shape, k).toEqual(t.shape);
      expect(Buffer.from(b.tensors[k].bytes).equals(Buffer.from(t.bytes)), k).toBe(true);
    }
    expect(readConfig(out).quantization_config).toEqual(readConfig(fixture).quantization_config);
    const qs = new TextDecoder().decode(b.tensors['model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4'].bytes);
    expect(qs).toMatch(/^\{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": \[64, 96\], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": [0-9.e-]+\}$/);
    model.dispose();
  });

  it('round trip: the bundled bf16 model quantised, saved and loaded has the same codes and the same logits', async () => {
    const q = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir(), { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) });
    const out = join(tmp, 'tiny4');
    await saveQuantizedPretrained(q, out);
    cpSync(join(tinyLlamaDir(), 'generation_config.json'), join(out, 'generation_config.json'));
    const again = await fromFile(out);
    const ids = [[5, 17, 300, 9, 41, 77]];
    const y1 = q.forward({ inputIds: ids }).logits;
    const y2 = again.forward({ inputIds: ids }).logits;
    expect(Array.from(await y2.data())).toEqual(Array.from(await y1.data()));
    const s1 = await q.getSubmodule<Linear4bit>('model.layers.2.mlp.up_proj').state();
    const s2 = await again.getSubmodule<Linear4bit>('model.layers.2.mlp.up_proj').state();
    expect(sha(s2.packed)).toBe(sha(s1.packed));
    expect(sha(s2.nested!.codes)).toBe(sha(s1.nested!.codes));
    expect(readConfig(out).quantization_config.bnb_4bit_quant_type).toBe('nf4');
    tf.dispose([y1, y2]);
    q.dispose();
    again.dispose();
  });

  it('a checkpoint with quantization_config needs a quantizationConfig', async () => {
    await expect(AutoModelForCausalLM.fromPretrained(fixture)).rejects.toThrow(/quantization_config.*pass quantizationConfig/);
  });

  it('broken files are refused naming the tensor', async () => {
    const bytes = new Uint8Array(readFileSync(join(fixture, 'model.safetensors')));
    const file = parseSafetensors(bytes);
    const rewrite = (name: string, edit: (t: Record<string, TensorToWrite>) => void) => {
      const t: Record<string, TensorToWrite> = {};
      for (const [k, r] of Object.entries(file.tensors)) t[k] = { dtype: r.dtype, shape: r.shape, data: r.dtype === 'F32' ? new Float32Array(r.bytes.slice().buffer) : Uint8Array.from(r.bytes) } as TensorToWrite;
      edit(t);
      const d = join(tmp, name);
      cpSync(fixture, d, { recursive: true });
      writeFileSync(join(d, 'model.safetensors'), serializeSafetensors(t, { format: 'pt' }));
      return d;
    };
    const qmap = rewrite('qmap', (t) => ((t['model.layers.0.self_attn.q_proj.weight.quant_map'].data as Float32Array)[3] = 0.5));
    await expect(fromFile(qmap)).rejects.toThrow(/q_proj\.weight\.quant_map" is not bitsandbytes' nf4 table/);
    const short = rewrite('short', (t) => {
      const w = t['model.layers.0.mlp.up_proj.weight'];
      t['model.layers.0.mlp.up_proj.weight'] = { dtype: 'U8', shape: [10, 1], data: (w.data as Uint8Array).slice(0, 10) };
    });
    await expect(fromFile(short)).rejects.toThrow(/up_proj\.weight" must be uint8 with 3072 bytes/);
    const js = rewrite('json', (t) => {
      const k = 'model.layers.0.mlp.gate_proj.weight.quant_state.bitsandbytes__nf4';
      t[k] = { dtype: 'U8', shape: [3], data: Uint8Array.from([123, 34, 0]) };
    });
    await expect(fromFile(js)).rejects.toThrow(/gate_proj\.weight\.quant_state\.bitsandbytes__nf4" is not UTF-8 JSON/);
    const before = tf.memory().numTensors;
    await expect(fromFile(js)).rejects.toThrow();
    expect(tf.memory().numTensors).toBe(before);
  });

  it("Python's float repr", () => {
    expect([0.0123, 1e-5, 1.5e-5, 2, 0.0001, 1e16, -3.25e-7].map(pyFloat)).toEqual(['0.0123', '1e-05', '1.5e-05', '2.0', '0.0001', '1e+16', '-3.25e-07']);
  });
});

describe('hostile checkpoints for the 4-bit loader', () => {
  it('a config.json far larger than its weights fails on the first missing tensor, nothing allocated at the claimed size, nothing leaks', async () => {
    const d = join(tmp, 'huge');
    cpSync(fixture, d, { recursive: true });
    const cfg = readConfig(d);
    cfg.num_hidden_layers = 40;
    writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
    const before = tf.memory().numTensors;
    await expect(fromFile(d)).rejects.toThrow(/missing tensor "model\.layers\.1\.self_attn\.q_proj\.weight" \[64,64\]/);
    expect(tf.memory().numTensors).toBe(before);
    cfg.num_hidden_layers = 1;
    cfg.vocab_size = 4096;
    writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
    await expect(fromFile(d)).rejects.toThrow(/"model\.embed_tokens\.weight" has shape \[256,64\] but the model expects \[4096,64\]/);
    expect(tf.memory().numTensors).toBe(before);
  });
});
