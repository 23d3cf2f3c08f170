import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { getPeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { PrefixTuningConfig } from '@peftjs/prefix';
import { AdapterConfig, ConfigUnion, MAMConfig, SeqBnConfig, UniPELTConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

describe('config unions (AdapterHub\'s MAM and UniPELT)', () => {
  it('MAM = prefix tuning (30 tokens, width 800) + ParBn; UniPELT = LoRA (r 8, alpha 2) + prefix (10) + gated SeqBn', () => {
    const mam = new MAMConfig().expand('task');
    expect(mam.map(([n]) => n)).toEqual(['task_prefix_tuning', 'task_bottleneck']);
    expect(mam[0][1]).toBeInstanceOf(PrefixTuningConfig);
    expect(mam[0][1]).toMatchObject({ numVirtualTokens: 30, prefixProjection: true, encoderHiddenSize: 800 });
    expect(mam[1][1]).toMatchObject({ parallel: true, reductionFactor: 2, scaling: 4, outputAdapter: true, mhAdapter: false });
    const uni = new UniPELTConfig({ adapter: { reductionFactor: 4 } }).expand('u');
    expect(uni.map(([n]) => n)).toEqual(['u_lora', 'u_prefix_tuning', 'u_bottleneck']);
    expect(uni[0][1]).toMatchObject({ r: 8, loraAlpha: 2 });
    expect(uni[1][1]).toMatchObject({ numVirtualTokens: 10 });
    expect(uni[2][1]).toMatchObject({ useGating: true, reductionFactor: 4, parallel: false });
    expect(() => new ConfigUnion(new SeqBnConfig(), new AdapterConfig())).toThrow(/two BOTTLENECK configs/);
  });

  it('the injection members of UniPELT (LoRA + gated SeqBn) run on one model, both active, the identity at init, both trained', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const ids = [[3, 4, 5, 6, 7]];
    const before = base.forward({ inputIds: ids }).logits;
    const [[loraName, lora], , [bnName, bn]] = new UniPELTConfig({ adapter: { reductionFactor: 4 } }).expand('u');
    expect(lora).toBeInstanceOf(LoraConfig);
    const peft = getPeftModel(base, lora, loraName);
    peft.addAdapter(bnName, bn);
    peft.setAdapter([loraName, bnName]);
    const after = peft.forward({ inputIds: ids }).logits;
    expect(tf.max(tf.abs(tf.sub(before, after))).arraySync()).toBe(0);
    const trainable = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(trainable.some((k) => k.includes('lora_A.u_lora'))).toBe(true);
    expect(trainable.some((k) => k.includes('adapters.u_bottleneck.gate'))).toBe(true);
    tf.dispose([before, after]);
    peft.dispose();
  });
});
