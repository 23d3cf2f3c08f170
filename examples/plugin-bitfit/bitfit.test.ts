import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PeftConfig,
  PeftModel,
  PEFT_METHOD_SPEC_VERSION,
  basePeftConfigShape,
  getPeftModel,
  listPeftMethods,
  prefixedParameterKey,
  registerPeftMethod,
  parseSafetensors,
  targetModulesSchema,
  unregisterPeftMethod,
  type InjectionMethod,
  type Linear,
  type PeftMethod,
} from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { BitFitConfig, BitFitLinear, bitfitMethod } from './index';
import { hfCase } from '../../tools/testing/fixtures';

describe('a third-party method on the public contract (BitFit)', () => {
  it('injects, trains a step, saves, reloads by peft_type, merges', async () => {
    const dir = `${hfCase('qwen2_lora')}base`; // Qwen2: q/k/v have biases to merge into
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), new BitFitConfig({ targetModules: ['q_proj', 'k_proj'] }));
    const [trainable] = peft.getNbTrainableParameters();
    const cfg = peft.model.config;
    expect(trainable).toBe(cfg.numHiddenLayers * (cfg.numAttentionHeads + cfg.numKeyValueHeads) * cfg.headDim);
    const ids = [[3, 4, 5, 6, 7, 8]];
    const opt = tf.train.sgd(0.5);
    opt.minimize(() => peft.forward({ inputIds: ids, labels: ids }).loss!, false, peft.trainableParameters());
    const after = peft.forward({ inputIds: ids }).logits;
    const out = join(mkdtempSync(join(tmpdir(), 'bitfit-')), 'a');
    await peft.savePretrained(out);
    expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')).peft_type).toBe('PLUGIN_BITFIT');
    const keys = Object.keys(parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors'))).tensors);
    expect(keys).toContain('base_model.model.model.layers.0.self_attn.q_proj.plugin_bitfit_bias');
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out);
    expect(tf.max(tf.abs(tf.sub(again.forward({ inputIds: ids }).logits, after))).dataSync()[0]).toBe(0);
    const merged = again.mergeAndUnload();
    expect(tf.max(tf.abs(tf.sub(merged.forward({ inputIds: ids }).logits, after))).dataSync()[0]).toBeLessThan(1e-5);
  });

  it('the registry refuses a duplicate name or prefix; the plugin lives beside the shipped BITFIT', async () => {
    await import('@peftjs/bitfit'); // registers BITFIT / bitfit_: no clash with the plugin's names
    expect(listPeftMethods().map((m) => m.peftType)).toEqual(expect.arrayContaining(['BITFIT', 'PLUGIN_BITFIT']));
    expect(registerPeftMethod(bitfitMethod)).toBe(bitfitMethod); // the same object again is a no-op
    expect(() => registerPeftMethod({ ...bitfitMethod })).toThrow(/already registered/);
    expect(() => registerPeftMethod({ ...bitfitMethod, peftType: 'PLUGIN_BITFIT2', configClass: configOf('PLUGIN_BITFIT2') })).toThrow(/prefix "plugin_bitfit_" .* already used by PLUGIN_BITFIT/);
    expect(() => registerPeftMethod({ ...bitfitMethod, peftType: 'X', prefix: 'x_', specificationVersion: 'v0' as never })).toThrow(/specificationVersion/);
  });

  it("registration checks the config class's peftType, the contract's members, and tells a v1 method what v2 needs", () => {
    // the config class says PLUGIN_BITFIT, the method another name: both are named
    expect(() => registerPeftMethod({ ...bitfitMethod, peftType: 'PLUGIN_OTHER', prefix: 'other_' })).toThrow(/method PLUGIN_OTHER: its configClass BitFitConfig declares peftType "PLUGIN_BITFIT"/);
    const { parameterKey: _p, targetFields: _t, ...v1 } = bitfitMethod;
    const asV1 = { ...v1, peftType: 'PLUGIN_V1', prefix: 'v1_', configClass: configOf('PLUGIN_V1'), specificationVersion: 'v1' } as unknown as PeftMethod;
    expect(() => registerPeftMethod(asV1)).toThrow(/specificationVersion "v1" is not supported \(expected "v2"\); v2 also needs targetFields, parameterKey/);
    const incomplete = { ...v1, peftType: 'PLUGIN_V2', prefix: 'v2_', configClass: configOf('PLUGIN_V2') } as unknown as PeftMethod;
    expect(() => registerPeftMethod(incomplete)).toThrow(/injection method PLUGIN_V2 is incomplete: it has no targetFields, parameterKey/);
    expect(listPeftMethods().map((m) => m.peftType)).not.toEqual(expect.arrayContaining(['PLUGIN_OTHER', 'PLUGIN_V1', 'PLUGIN_V2']));
  });

  it('saving fails, naming them, when trainable parameters would not be written (a plugin whose names miss its prefix)', async () => {
    // the layer names its deltas plugin_bitfit_bias.<adapter>, but the method claims misnamed_…<adapter>
    const misnamed = registerPeftMethod({
      ...bitfitMethod,
      peftType: 'PLUGIN_MISNAMED',
      prefix: 'misnamed_',
      configClass: configOf('PLUGIN_MISNAMED'),
      parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'misnamed_'),
    });
    try {
      const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
      const before = tf.memory().numTensors;
      const peft = getPeftModel(base, new (configOf('PLUGIN_MISNAMED'))({ targetModules: ['q_proj'] }));
      expect(peft.getNbTrainableParameters()[0]).toBeGreaterThan(0);
      const out = join(mkdtempSync(join(tmpdir(), 'misnamed-')), 'a');
      const layers = peft.model.config.numHiddenLayers;
      await expect(peft.savePretrained(out)).rejects.toThrow(
        new RegExp(`adapter "default" \\(PLUGIN_MISNAMED\\) has trainable parameters .* would not be written: "base_model\\.model\\.model\\.layers\\.0\\.self_attn\\.q_proj\\.plugin_bitfit_bias\\.default"${layers > 4 ? `.* and ${layers - 4} more` : ''}`),
      );
      expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(false); // an error, not an empty file
      expect(() => peft.adapterStateDict('default')).toThrow(/would not be written/);
      expect(tf.memory().numTensors).toBe(before + layers); // the deltas only: nothing leaked by the refusals
      peft.unload();
    } finally {
      unregisterPeftMethod(misnamed.peftType);
    }
  });

  it("a parameterKey that ignores the adapter name is refused when the second adapter is added, which is then removed", async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
    const sameKey = registerPeftMethod({
      ...bitfitMethod,
      peftType: 'PLUGIN_SAMEKEY',
      prefix: 'samekey_',
      configClass: configOf('PLUGIN_SAMEKEY'),
      // every adapter's delta under one key: saving one adapter would pick whichever came last
      parameterKey: (path) => (/\.plugin_bitfit_bias\.[^.]+$/.test(path) ? path.replace(/\.[^.]+$/, '') : undefined),
    });
    const anyAdapter = registerPeftMethod({
      ...bitfitMethod,
      peftType: 'PLUGIN_ANYADAPTER',
      prefix: 'anyadapter_',
      configClass: configOf('PLUGIN_ANYADAPTER'),
      // every adapter's delta claimed by each adapter (keys kept apart by the name)
      parameterKey: (path) => (path.includes('.plugin_bitfit_bias.') ? path : undefined),
    });
    try {
      const q0 = 'base_model.model.model.layers.0.self_attn.q_proj.plugin_bitfit_bias';
      for (const [method, error] of [
        [sameKey, new RegExp(`parameters "${q0}\\.default" and "${q0}\\.b" get the same file key "${q0}"`)],
        [anyAdapter, new RegExp(`PLUGIN_ANYADAPTER: parameterKey claims "base_model\\.model\\.model\\.layers\\.0\\.self_attn\\.q_proj\\.plugin_bitfit_bias\\.default" of adapter "default" for adapter "b"`)],
      ] as const) {
        const Config = configOf(method.peftType);
        const peft = getPeftModel(base, new Config({ targetModules: ['q_proj'] }));
        const [trainable] = peft.getNbTrainableParameters();
        const before = tf.memory().numTensors;
        expect(() => peft.addAdapter('b', new Config({ targetModules: ['q_proj'] }))).toThrow(error);
        expect(Object.keys(peft.peftConfig)).toEqual(['default']);
        expect(peft.getNbTrainableParameters()[0]).toBe(trainable);
        expect(tf.memory().numTensors).toBe(before); // b's deltas were disposed with it
        peft.unload();
      }
    } finally {
      unregisterPeftMethod(sameKey.peftType);
      unregisterPeftMethod(anyAdapter.peftType);
    }
  });

  it('the method is resolved when the adapter is added: unregistering it leaves a live model working', async () => {
    const method = registerPeftMethod({ ...bitfitMethod, peftType: 'PLUGIN_LIVE', prefix: 'live_', configClass: configOf('PLUGIN_LIVE'), parameterKey: bitfitMethod.parameterKey });
    const dir = `${hfCase('qwen2_lora')}base`;
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), new (configOf('PLUGIN_LIVE'))({ targetModules: ['q_proj'] }));
    const ids = [[3, 4, 5, 6]];
    tf.train.sgd(0.5).minimize(() => peft.forward({ inputIds: ids, labels: ids }).loss!, false, peft.trainableParameters());
    const want = peft.forward({ inputIds: ids }).logits;
    unregisterPeftMethod(method.peftType);
    expect(listPeftMethods()).not.toContain(method);
    expect(tf.max(tf.abs(tf.sub(peft.forward({ inputIds: ids }).logits, want))).dataSync()[0]).toBe(0);
    const out = join(mkdtempSync(join(tmpdir(), 'live-')), 'a');
    await peft.savePretrained(out); // save, merge and delete need no registry either
    expect(Object.keys(parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors'))).tensors)).toContain('base_model.model.model.layers.0.self_attn.q_proj.plugin_bitfit_bias');
    peft.mergeAdapter();
    expect(tf.max(tf.abs(tf.sub(peft.forward({ inputIds: ids }).logits, want))).dataSync()[0]).toBeLessThan(1e-5);
    // loading by peft_type does need it: the error names the type
    await expect(PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out)).rejects.toThrow(/unknown peft_type "PLUGIN_LIVE"/);
  });

  it('the target field is the one the method names (not always targetModules)', async () => {
    const shape = { ...basePeftConfigShape, biasModules: targetModulesSchema.default(['q_proj']) };
    class BiasConfig extends PeftConfig {
      static readonly peftType = 'PLUGIN_FIELD';
      static readonly shape = shape;
      static readonly hfOnlyDefaults = {};
      declare biasModules: string | string[] | null;
      constructor(input: { biasModules?: string | string[] } = {}) {
        super();
        this.init(input, 'BiasConfig');
      }
    }
    const fieldMethod: InjectionMethod<BiasConfig, Linear | BitFitLinear> = {
      specificationVersion: PEFT_METHOD_SPEC_VERSION,
      kind: 'injection',
      canWrap: bitfitMethod.canWrap,
      peftType: 'PLUGIN_FIELD',
      prefix: 'field_',
      configClass: BiasConfig,
      targetFields: { targetModules: 'biasModules' },
      inject({ target, adapterName }) {
        const layer = target instanceof BitFitLinear ? target : new BitFitLinear(target);
        layer.addAdapter(adapterName);
        return layer;
      },
      parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'plugin_bitfit_'),
    };
    const method = registerPeftMethod(fieldMethod);
    try {
      const dir = `${hfCase('qwen2_lora')}base`;
      const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), new BiasConfig({ biasModules: ['k_proj'] }));
      const cfg = peft.model.config;
      expect(peft.getNbTrainableParameters()[0]).toBe(cfg.numHiddenLayers * cfg.numKeyValueHeads * cfg.headDim);
      const other = await AutoModelForCausalLM.fromPretrained(dir);
      expect(() => getPeftModel(other, new BiasConfig({ biasModules: ['nothing'] }))).toThrow(/PLUGIN_FIELD: bias_modules \["nothing"\] matched no module/);
    } finally {
      unregisterPeftMethod(method.peftType);
    }
  });
});

/** The plugin's config under another peft_type (the registry wants the method's and the class's to agree). */
function configOf(peftType: string) {
  return class extends PeftConfig {
    static readonly peftType = peftType;
    static readonly shape = BitFitConfig.shape;
    static readonly hfOnlyDefaults = {};
    declare targetModules: string | string[] | null;
    constructor(input: { targetModules?: string | string[] } = {}) {
      super();
      this.init(input, `${peftType} config`);
    }
  };
}
