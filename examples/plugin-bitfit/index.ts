// A third-party PEFT method built only on @peftjs/core's public contract: BitFit-style bias tuning
// (the seed's "selective" family). Each targeted Linear gets a trainable bias delta `plugin_bitfit_bias`
// [out], saved as `<module>.plugin_bitfit_bias`, mergeable into the layer's bias.
// It registers as PLUGIN_BITFIT with the prefix `plugin_bitfit_`: the registry is one per process and
// refuses a second owner of a peft_type or a prefix, and BITFIT / `bitfit_` belong to the shipped
// @peftjs/bitfit (which `peftjs` registers on import). A plugin takes names of its own.
import * as tf from '@tensorflow/tfjs';
import {
  BaseTunerLayer,
  Linear,
  ParameterDict,
  PeftConfig,
  PeftError,
  PEFT_METHOD_SPEC_VERSION,
  basePeftConfigShape,
  prefixedParameterKey,
  registerPeftMethod,
  targetModulesSchema,
  z,
  type InjectionMethod,
} from '@peftjs/core';

const shape = { ...basePeftConfigShape, targetModules: targetModulesSchema.default(['q_proj', 'v_proj']) };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface BitFitConfig extends Fields {}
export class BitFitConfig extends PeftConfig {
  static readonly peftType = 'PLUGIN_BITFIT';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};
  constructor(input: Partial<z.input<z.ZodObject<typeof shape>>> = {}) {
    super();
    this.init(input, 'BitFitConfig');
  }
}

export class BitFitLinear extends BaseTunerLayer {
  readonly peftType = 'PLUGIN_BITFIT';
  constructor(base: Linear) {
    super(base);
    this.registerModule('plugin_bitfit_bias', new ParameterDict());
  }
  private get deltas(): ParameterDict {
    return this.child('plugin_bitfit_bias');
  }
  private get linear(): Linear {
    return this.getBaseLayer() as Linear;
  }
  addAdapter(name: string): void {
    const z0 = tf.zeros([this.linear.outFeatures]);
    this.deltas.set(name, z0);
    z0.dispose();
  }
  adapterNames(): string[] {
    return this.deltas.keys();
  }
  protected mergeOne(name: string): void {
    const bias = this.linear.bias;
    if (!bias) throw new PeftError('UNSUPPORTED', 'BitFit can only merge into a layer that has a bias');
    const merged = tf.tidy(() => tf.add(bias, this.deltas.get(name)!));
    bias.assign(merged);
    merged.dispose(); // assign shares the data; the tensor itself is still ours to dispose
  }
  protected unmergeOne(name: string): void {
    const bias = this.linear.bias!;
    const unmerged = tf.tidy(() => tf.sub(bias, this.deltas.get(name)!));
    bias.assign(unmerged);
    unmerged.dispose();
  }
  protected deleteOne(name: string): void {
    this.deltas.delete(name);
  }
  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    return tf.tidy(() => this.activeAdapters.filter((n) => this.has(n)).reduce((y, n) => tf.add(y, this.deltas.get(n)!), this.baseLayer.forward(x)));
  }
}

export const bitfitMethod: InjectionMethod<BitFitConfig, Linear | BitFitLinear> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'PLUGIN_BITFIT',
  prefix: 'plugin_bitfit_',
  kind: 'injection',
  configClass: BitFitConfig,
  targetFields: { targetModules: 'targetModules' },
  // its own layer too: a second adapter is added to the layer the first made
  canWrap: (m): m is Linear | BitFitLinear => m instanceof Linear || m instanceof BitFitLinear,
  inject({ target, adapterName }) {
    const layer = target instanceof BitFitLinear ? target : new BitFitLinear(target);
    layer.addAdapter(adapterName);
    return layer;
  },
  // HF's rule: `plugin_bitfit_bias.<adapter>` is saved as `plugin_bitfit_bias`
  parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'plugin_bitfit_'),
};

registerPeftMethod(bitfitMethod);
