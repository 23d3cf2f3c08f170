import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { Module, PeftModel, ResidualAdd, getPeftModel, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { AdapterConfig, BottleneckLayer, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig, adapterConfigFromName } from './index';
import { HF } from '../../../tools/testing/fixtures';

// the committed fixtures' models (d 32, 2 layers), whatever PEFTJS_FIXTURES_HF says: these tests pin shapes and names
const LLAMA = `${HF}llama_lora_qv/base`;
const GPT2 = `${HF}gpt2_lora_cattn/base`;
const batch = { inputIds: [[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6]], attentionMask: [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]] };

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

describe('bottleneck adapters: fresh adapters are the identity', () => {
  for (const [model, dir] of [['llama', LLAMA], ['gpt2', GPT2]] as const) {
    for (const [name, make] of [
      ['SeqBn', () => new SeqBnConfig()],
      ['DoubleSeqBn', () => new DoubleSeqBnConfig()],
      ['ParBn', () => new ParBnConfig()],
      ['gated + learned scaling + lnBefore', () => new SeqBnConfig({ useGating: true, scaling: 'learned', lnBefore: true })],
      ['channel scaling, lnAfter, residualBeforeLn false', () => new DoubleSeqBnConfig({ scaling: 'channel', lnAfter: true, adapterResidualBeforeLn: true, residualBeforeLn: false, originalLnBefore: true })],
    ] as const) {
      it(`${model} ${name}`, async () => {
        const base = await AutoModelForCausalLM.fromPretrained(dir);
        const before = base.forward(batch).logits;
        const peft = getPeftModel(base, make());
        const after = peft.forward(batch).logits;
        // a fresh adapter adds zero; with residualBeforeLn false and originalLnBefore the decoder's residual is added twice (AdapterHub's definition)
        const identity = name.includes('residualBeforeLn false') ? false : true;
        if (identity) expect(await maxAbsDiff(before, after)).toBeLessThan(1e-6);
        else expect(await maxAbsDiff(before, after)).toBeGreaterThan(1e-3);
        tf.dispose([before, after]);
        peft.unload().dispose();
      });
    }
  }
});

describe('bottleneck adapters: files, counts, training, errors', () => {
  it('saves HF PEFT\'s layout with tensor names that say layer and placement; load → forward is exact', async () => {
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { parseSafetensors } = await import('@peftjs/core');
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-adapters-'));
    try {
      const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DoubleSeqBnConfig({ reductionFactor: 4, useGating: true, scaling: 'learned', leaveOut: [1] }));
      for (const [, v] of peft.adapterTensorMap('default')) v.assign(tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.2, 'float32', 3))));
      const before = peft.forward(batch).logits;
      await peft.savePretrained(dir);
      const file = parseSafetensors(readFileSync(join(dir, 'adapter_model.safetensors')));
      const keys = Object.keys(file.tensors).sort();
      const root = 'base_model.model.model.layers.0';
      expect(keys).toEqual(
        ['attention_adapters', 'output_adapters']
          .flatMap((p) => ['adapter_down.bias', 'adapter_down.weight', 'adapter_up.bias', 'adapter_up.weight', 'gate.bias', 'gate.weight', 'scaling'].map((n) => `${root}.${p}.${n}`))
          .sort(),
      );
      expect(file.tensors[`${root}.output_adapters.adapter_down.weight`].shape).toEqual([8, 32]);
      expect(file.tensors[`${root}.output_adapters.adapter_up.weight`].shape).toEqual([32, 8]);
      expect(file.tensors[`${root}.output_adapters.gate.weight`].shape).toEqual([1, 32]);
      expect(file.tensors[`${root}.output_adapters.scaling`].shape).toEqual([1]);
      const json = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
      expect(json.peft_type).toBe('BOTTLENECK');
      expect(json).toMatchObject({ mh_adapter: true, output_adapter: true, reduction_factor: 4, adapter_act: 'swish', original_ln_before: false, use_gating: true, scaling: 'learned', leave_out: [1], layers_to_transform: [0], target_modules: ['attention_adapters', 'output_adapters'], inference_mode: true });
      const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), dir);
      const after = again.forward(batch).logits;
      expect(await maxAbsDiff(before, after)).toBe(0);
      expect(again.peftConfig.default).toBeInstanceOf(AdapterConfig);
      tf.dispose([before, after]);
      peft.dispose();
      again.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parameter counts per preset: 2·d·r + r + d per placement and layer (bottleneck r = d // reductionFactor)', async () => {
    const d = 32;
    const L = 2;
    for (const [name, cfg, r, places] of [
      ['SeqBn', new SeqBnConfig(), 2, 1],
      ['DoubleSeqBn', new DoubleSeqBnConfig(), 2, 2],
      ['ParBn', new ParBnConfig(), 16, 1],
      ['adapterSize 5', new SeqBnConfig({ adapterSize: 5 }), 5, 1],
      ['reductionFactor per layer', new SeqBnConfig({ reductionFactor: { '0': 4, default: 8 } }), (8 + 4) / 2, 1],
    ] as const) {
      const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), cfg);
      const [trainable] = peft.getNbTrainableParameters();
      expect(trainable, name).toBe(L * places * (2 * d * r + r + d));
      peft.dispose();
    }
  });

  it('a training step changes only the adapters (base bit-identical); forwards and steps do not leak', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(GPT2), new DoubleSeqBnConfig({ reductionFactor: 4, adapterDropout: 0.1, useGating: true }));
    peft.train();
    const opt = tf.train.adam(1e-2);
    const snap = () => new Map([...peft.namedParameters()].map(([k, v]) => [k, v.clone()]));
    const step = () => {
      const params = peft.trainableParameters();
      const { value, grads } = tf.variableGrads(() => peft.forward({ ...batch, labels: batch.inputIds }).loss!, params);
      opt.applyGradients(grads as tf.NamedTensorMap as Record<string, tf.Variable>);
      tf.dispose([value, ...Object.values(grads)]);
    };
    step(); // adam's slots
    const s0 = snap();
    step();
    const s1 = snap();
    let changed = 0;
    for (const [k, v] of s0) {
      const same = (await maxAbsDiff(v, s1.get(k)!)) === 0;
      if (k.includes('.adapters.default.')) {
        if (!same) changed++;
      } else expect(same, k).toBe(true);
    }
    expect(changed).toBe(2 * 2 * 6); // 2 layers × 2 placements × (down, up, gate: weight and bias)
    tf.dispose([...s0.values(), ...s1.values()]);
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) step();
    peft.eval();
    for (let i = 0; i < 2; i++) peft.forward(batch).logits.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    opt.dispose();
    peft.dispose();
  });

  it('several adapters: one active at a time, others kept; deleteAdapter; two active need a composition', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new SeqBnConfig({ reductionFactor: 4 }), 'a');
    peft.addAdapter('b', new ParBnConfig());
    const layer = peft.model.getSubmodule<BottleneckLayer>('model.layers.1.output_adapters');
    expect(layer).toBeInstanceOf(BottleneckLayer);
    expect(layer.adapterNames()).toEqual(['a', 'b']);
    peft.setAdapter(['a', 'b']);
    expect(() => peft.forward(batch)).toThrow(/2 bottleneck adapters are active at layer 0 output_adapters \(a, b\).*setActiveAdapters\(Stack/);
    peft.setAdapter('b');
    peft.forward(batch).logits.dispose();
    peft.deleteAdapter('a');
    expect(layer.adapterNames()).toEqual(['b']);
    expect([...peft.namedParameters()].some(([k]) => k.includes('.adapters.a.'))).toBe(false);
    peft.dispose();
  });

  it('errors name the field, the layer or the reason', async () => {
    expect(() => new AdapterConfig({ adapterAct: 'sigmoid' } as never)).toThrow(/AdapterConfig: field "adapterAct"/);
    expect(() => new SeqBnConfig({ reductionFator: 4 } as never)).toThrow(/SeqBnConfig: unknown field "reductionFator"/);
    expect(() => new AdapterConfig({ mhAdapter: false, outputAdapter: false })).toThrow(/"mhAdapter" and "outputAdapter" are both false/);
    expect(() => new AdapterConfig({ reductionFactor: 0 })).toThrow(/field "reductionFactor"/);
    expect(() => new AdapterConfig({ reductionFactor: { first: 2 } })).toThrow(/key "first" must be a layer index or "default"/);
    expect(() => new AdapterConfig({ targetModules: ['q_proj'] })).toThrow(/"targetModules" is filled from mhAdapter\/outputAdapter/);
    expect(() => adapterConfigFromName('lora')).toThrow(/unknown adapter preset "lora"; presets: seq_bn, pfeiffer/);
    expect(adapterConfigFromName('houlsby')).toBeInstanceOf(DoubleSeqBnConfig);
    const base = await AutoModelForCausalLM.fromPretrained(LLAMA);
    expect(() => getPeftModel(base, new SeqBnConfig({ leaveOut: [5] }))).toThrow(/field "leaveOut" names layer 5, but the model has 2 layers/);
    expect(() => getPeftModel(base, new SeqBnConfig({ leaveOut: [0, 1] }))).toThrow(/leaves out every layer/);
    expect(() => getPeftModel(base, new SeqBnConfig({ reductionFactor: { '1': 2 } }))).toThrow(/no entry for layer 0 and no "default"/);
    const peft = getPeftModel(base, new SeqBnConfig());
    expect(() => peft.mergeAdapter()).toThrow(/cannot be merged: a bottleneck adapter is a non-linear branch/);
    expect(() => peft.mergeAndUnload()).toThrow(/cannot be merged/);
    expect(() => peft.forward({ ...batch, adapterNames: ['default', 'default'] })).toThrow(/do not support per-sample adapters/);
    expect(peft.model.getSubmodule('model.layers.0.output_adapters')).toBeInstanceOf(BottleneckLayer);
    expect(peft.model.getSubmodule('model.layers.0.attention_adapters')).toBeInstanceOf(ResidualAdd);
    const plain = peft.unload();
    expect(plain.getSubmodule('model.layers.0.output_adapters')).toBeInstanceOf(ResidualAdd);
    expect([...plain.namedParameters()].some(([k]) => k.includes('adapters'))).toBe(false);
    plain.dispose();
  });
});

describe('bottleneck adapters with the model\'s other paths', () => {
  it('gradient checkpointing gives the same gradients; greedy generation (KV cache) is the full forward\'s argmax', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DoubleSeqBnConfig({ reductionFactor: 4 }));
    for (const [, v] of peft.adapterTensorMap('default')) v.assign(tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.3, 'float32', 5))));
    peft.train();
    const vars = [...peft.adapterTensorMap('default').values()];
    const grads = () => {
      const { value, grads: g } = tf.variableGrads(() => peft.forward({ ...batch, labels: batch.inputIds }).loss!, vars);
      value.dispose();
      return vars.map((v) => g[v.name]);
    };
    const plain = grads();
    peft.model.gradientCheckpointingEnable();
    const checkpointed = grads();
    peft.model.gradientCheckpointingDisable();
    for (let i = 0; i < vars.length; i++) expect(await maxAbsDiff(plain[i], checkpointed[i])).toBeLessThan(1e-6);
    tf.dispose([...plain, ...checkpointed]);

    peft.eval();
    const prompt = [5, 6, 7, 8];
    const generated = (await peft.generate({ inputIds: [prompt], maxNewTokens: 4 }))[0];
    const ids = [...prompt];
    for (let i = 0; i < 4; i++) {
      const logits = peft.forward({ inputIds: [ids] }).logits;
      const next = tf.tidy(() => tf.argMax(logits.slice([0, ids.length - 1, 0], [1, 1, -1]).reshape([-1])));
      ids.push((await next.data())[0]);
      tf.dispose([logits, next]);
    }
    expect(generated.slice(-4)).toEqual(ids.slice(-4));
    peft.dispose();
  });
});

describe('bottleneck adapters: other tasks and bad files', () => {
  it('SEQ_CLS: the score head is trained and saved beside the adapters', async () => {
    const { AutoModelForSequenceClassification } = await import('@peftjs/models');
    const { TaskType } = await import('@peftjs/core');
    const base = await AutoModelForSequenceClassification.fromPretrained(`${HF}llama_seqcls_lora/base`);
    const peft = getPeftModel(base, new SeqBnConfig({ taskType: TaskType.SEQ_CLS, reductionFactor: 4 }));
    const keys = Object.keys(peft.adapterStateDict());
    expect(keys).toContain('base_model.model.score.weight');
    expect(keys).toContain('base_model.model.model.layers.0.output_adapters.adapter_down.weight');
    const out = peft.forward({ inputIds: [[4, 5, 6]] }).logits;
    expect(out.shape).toEqual([1, 3]);
    out.dispose();
    peft.dispose();
  });

  it('a config file with AdapterHub\'s field names, or an adapter of another model, fails naming the file and the field or tensor', async () => {
    const { mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { fileURLToPath } = await import('node:url');
    const src = fileURLToPath(new URL('../fixtures/adapterhub/llama_seq_bn/adapter/', import.meta.url));
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-adapters-bad-'));
    try {
      cpSync(src, dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
      writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, non_linearity: 'relu' }));
      await expect(PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), dir)).rejects.toThrow(/adapter_config\.json: unknown field "non_linearity" for BOTTLENECK/);
      writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, adapter_act: 'sigmoid' }));
      await expect(PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), dir)).rejects.toThrow(/adapter_config\.json: field "adapter_act"/);
      // the LLaMA adapter on GPT-2: its tensor names are not this model's
      writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
      await expect(PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(GPT2), dir)).rejects.toThrow(/adapter_model\.safetensors: tensors "base_model\.model\.model\.layers\.0\.output_adapters\.adapter_down\.bias".*do not belong/);
      // another bottleneck width: a shape mismatch naming the tensor
      writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, reduction_factor: 2 }));
      await expect(PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), dir)).rejects.toThrow(/tensor "base_model\.model\.model\.layers\.0\.output_adapters\.adapter_(down|up)\.(weight|bias)" has shape \[\d+(,\d+)?\] but this model needs/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
