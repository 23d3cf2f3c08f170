import * as tf from '@tensorflow/tfjs';
import { BaseTunerLayer, Dropout, LayerNorm, Linear, Module, ModuleDict, PeftError, ResidualAdd, kaimingUniform, nextSeed, type ResidualHook } from '@peftjs/core';
import type { AdapterActivation, AdapterConfig } from './config';
import { adapterActivation, bottleneckAdapterOp } from './op';
import { BOTTLENECK_COMPOSITIONS, bottleneckComposedForward } from './composition';
import { dropFusionsOf } from './fusion';

/** What one adapter needs of its config, resolved for one layer. */
export interface BottleneckOptions {
  inputSize: number;
  /** The bottleneck width. */
  downSample: number;
  activation: AdapterActivation;
  dropout: number;
  parallel: boolean;
  originalLnBefore: boolean;
  originalLnAfter: boolean;
  residualBeforeLn: boolean;
  adapterResidualBeforeLn: boolean;
  lnBefore: boolean;
  lnAfter: boolean;
  scaling: number | 'learned' | 'channel';
  useGating: boolean;
  initWeights: 'mam_adapter' | 'bert' | 'houlsby';
}

/** A layer's options from a config (the bottleneck width may depend on the layer). */
export function bottleneckOptions(config: AdapterConfig, hiddenSize: number, layerIdx: number): BottleneckOptions {
  return {
    inputSize: hiddenSize,
    downSample: config.bottleneckSize(hiddenSize, layerIdx),
    activation: config.adapterAct,
    dropout: config.adapterDropout,
    parallel: config.parallel,
    originalLnBefore: config.originalLnBefore,
    originalLnAfter: config.originalLnAfter,
    residualBeforeLn: config.residualBeforeLn,
    adapterResidualBeforeLn: config.adapterResidualBeforeLn,
    lnBefore: config.lnBefore,
    lnAfter: config.lnAfter,
    scaling: config.scaling,
    useGating: config.useGating,
    initWeights: config.initWeights,
  };
}

function linear(inF: number, outF: number, weight: tf.Tensor, bias: tf.Tensor): Linear {
  const l = new Linear(inF, outF, { weight, biasValue: bias });
  weight.dispose();
  bias.dispose();
  return l;
}

/** AdapterHub's init_bert_weights: N(0, 0.02) weight, zero bias. */
function bertLinear(inF: number, outF: number): Linear {
  return linear(inF, outF, tf.randomNormal([outF, inF], 0, 0.02, 'float32', nextSeed()), tf.zeros([outF]));
}

/**
 * One bottleneck adapter (AdapterHub's `Adapter` / `ParallelAdapter`): adapter_down (Linear d → r, after an
 * optional adapter_norm_before), the non-linearity, adapter_up (Linear r → d), scaling (a number, or the
 * learned parameter `scaling`), dropout, an optional gate (Linear d → 1) and adapter_norm_after.
 */
export class BottleneckAdapter extends Module {
  constructor(readonly options: BottleneckOptions) {
    super();
    const { inputSize: d, downSample: r, initWeights } = options;
    if (options.lnBefore) this.registerModule('adapter_norm_before', new LayerNorm(d));
    if (initWeights === 'bert') {
      this.registerModule('adapter_down', bertLinear(d, r));
      this.registerModule('adapter_up', bertLinear(r, d));
    } else if (initWeights === 'houlsby') {
      // nn.init.trunc_normal_(std=1e-2, a=-2e-2, b=2e-2): tfjs's truncatedNormal cuts at two standard deviations
      this.registerModule('adapter_down', linear(d, r, tf.truncatedNormal([r, d], 0, 1e-2, 'float32', nextSeed()), tf.zeros([r])));
      this.registerModule('adapter_up', linear(r, d, tf.truncatedNormal([d, r], 0, 1e-2, 'float32', nextSeed()), tf.zeros([d])));
    } else {
      // mam_adapter: kaiming-uniform down, zero up and biases: the adapter starts as the identity
      this.registerModule('adapter_down', linear(d, r, kaimingUniform([r, d], d), tf.zeros([r])));
      this.registerModule('adapter_up', linear(r, d, tf.zeros([d, r]), tf.zeros([d])));
    }
    if (options.scaling === 'learned') this.registerParameter('scaling', tf.ones([1]), true, true);
    else if (options.scaling === 'channel') this.registerParameter('scaling', tf.ones([d]), true, true);
    if (options.lnAfter) this.registerModule('adapter_norm_after', new LayerNorm(d));
    if (options.useGating) this.registerModule('gate', bertLinear(d, 1));
    this.registerModule('dropout', new Dropout(options.dropout));
  }

  get down(): Linear {
    return this.child('adapter_down');
  }
  get up(): Linear {
    return this.child('adapter_up');
  }

  /** The gate of AdapterHub: mean over the sequence of sigmoid(gate(x)), [B, 1, 1] for x [B, T, d]. */
  gateOf(x: tf.Tensor): tf.Tensor | null {
    const g = this.maybeChild<Linear>('gate');
    if (!g) return null;
    return tf.tidy(() => tf.expandDims(tf.mean(tf.sigmoid(g.forward(x)), 1), -1));
  }

  /** The factor the adapter's output is multiplied by besides a fixed scaling: learned scaling × gate; null when none. */
  scaleOf(x: tf.Tensor): tf.Tensor | null {
    const learned = this.maybeParam('scaling') ?? null;
    const gate = this.gateOf(x);
    if (learned && gate) return tf.mul(learned, gate);
    return gate ?? learned;
  }

  get fixedScaling(): number {
    return typeof this.options.scaling === 'number' ? this.options.scaling : 1;
  }

  /** adapter_norm_before (when there is one) of the input. */
  normBefore(x: tf.Tensor): tf.Tensor {
    const n = this.maybeChild<LayerNorm>('adapter_norm_before');
    return n ? n.forward(x) : x;
  }

  /** up(act(down(norm_before(x)))) · scaling: AdapterHub's `up` (before dropout and gate). */
  branch(x: tf.Tensor): { down: tf.Tensor; up: tf.Tensor } {
    const down = adapterActivation(this.options.activation, this.down.forward(this.normBefore(x)));
    let up = this.up.forward(down);
    const learned = this.maybeParam('scaling');
    up = learned ? tf.mul(up, learned) : this.fixedScaling === 1 ? up : tf.mul(up, this.fixedScaling);
    return { down, up };
  }

  /** Whether the whole adapter can run as one peftjs.BottleneckAdapter op: no norm after it, no dropout now. */
  get fusable(): boolean {
    const drop = this.child<Dropout>('dropout');
    return !this.options.lnAfter && !(drop.training && drop.p > 0);
  }
}

/**
 * Bottleneck adapters at one residual connection of a decoder layer (AdapterHub's BottleneckLayer): it
 * replaces the decoder's `attention_adapters` or `output_adapters` (a ResidualAdd), so it sees the
 * sub-block's output `hidden` and its input `residual` (for a pre-norm decoder: the input before the norm),
 * and returns what the decoder continues with. Adapters are held as `adapters.<name>`.
 *
 * Per-adapter entry points, AdapterHub's pieces with its names (layer_norm is None in a pre-norm decoder):
 * - `preForward(name, hidden, residual)` → `{ hidden, residual }`: the adapter's input and its skip input.
 * - `adapterForward(name, x, residualInput)` → `{ output, down, up }`: the adapter on its input.
 * - `postForward(name, hidden, inputHidden, residual)` → the layer output (adds the decoder's residual).
 * - `adapterOutput(name, hidden, residual)`: the three in a row (one fused op where it can) = what the
 *   layer returns with only that adapter active; `up` of adapterForward is the adapter's own contribution.
 * With one active adapter `addResidual` is `adapterOutput`; several are combined by the active composition
 * block (core's `activeComposition`, ./composition.ts); several without one are an error.
 */
export class BottleneckLayer extends BaseTunerLayer implements ResidualHook {
  readonly peftType = 'BOTTLENECK';
  override readonly supportedCompositions = BOTTLENECK_COMPOSITIONS;

  constructor(
    base: ResidualAdd,
    /** `attention_adapters` (mh_adapter) or `output_adapters` (output_adapter). */
    readonly location: string,
    readonly layerIdx: number,
  ) {
    super(base);
    this.registerModule('adapters', new ModuleDict<BottleneckAdapter>());
  }

  override get moduleType(): string {
    return 'adapters.BottleneckLayer';
  }

  get adapters(): ModuleDict<BottleneckAdapter> {
    return this.child('adapters');
  }

  adapter(name: string): BottleneckAdapter {
    const a = this.adapters.get(name);
    if (!a) throw new PeftError('INVALID_ARGUMENT', `no bottleneck adapter "${name}" at layer ${this.layerIdx} ${this.location}; adapters here: ${this.adapterNames().join(', ') || 'none'}`);
    return a;
  }

  adapterNames(): string[] {
    return this.adapters.keys();
  }

  addAdapter(name: string, options: BottleneckOptions): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer ${this.layerIdx} ${this.location} already has a bottleneck adapter "${name}"`);
    const a = new BottleneckAdapter(options);
    a.train(this.training);
    this.adapters.set(name, a);
  }

  /** AdapterHub's Adapter.pre_forward: the adapter's input and the skip connection it adds to its output. */
  preForward(name: string, hidden: tf.Tensor, residual: tf.Tensor): { hidden: tf.Tensor; residual: tf.Tensor } {
    const o = this.adapter(name).options;
    if (o.parallel) return { hidden: residual, residual };
    const x = o.originalLnBefore ? tf.add(hidden, residual) : hidden;
    return { hidden: x, residual: o.residualBeforeLn ? hidden : x };
  }

  /** AdapterHub's Adapter.forward: `output` (with the adapter's own skip connection when serial), `down`, `up`. */
  adapterForward(name: string, x: tf.Tensor, residualInput: tf.Tensor): { output: tf.Tensor; down: tf.Tensor; up: tf.Tensor } {
    const a = this.adapter(name);
    const o = a.options;
    const { down, up } = a.branch(x);
    let out = a.child<Dropout>('dropout').forward(up);
    const gate = a.gateOf(x);
    if (gate) out = tf.mul(out, gate);
    const norm = a.maybeChild<LayerNorm>('adapter_norm_after');
    if (o.parallel) return { output: norm ? norm.forward(out) : out, down, up };
    if (o.adapterResidualBeforeLn) out = tf.add(out, residualInput);
    if (norm) out = norm.forward(out);
    if (!o.adapterResidualBeforeLn) out = tf.add(out, residualInput);
    return { output: out, down, up };
  }

  /** AdapterHub's Adapter.post_forward: `hidden` is the adapter's output, `inputHidden` the sub-block's output. */
  postForward(name: string, hidden: tf.Tensor, inputHidden: tf.Tensor, residual: tf.Tensor): tf.Tensor {
    const o = this.adapter(name).options;
    let out = o.parallel ? tf.add(hidden, inputHidden) : hidden;
    if (o.originalLnAfter) out = tf.add(out, residual);
    return out;
  }

  /** The layer's output with adapter `name` alone: preForward → adapterForward → postForward. */
  adapterOutput(name: string, hidden: tf.Tensor, residual: tf.Tensor): tf.Tensor {
    const a = this.adapter(name);
    const o = a.options;
    if (a.fusable) {
      // one op: skip + (act(down(x))·Wu + bu)·scaling·(learned · gate)
      const pre = this.preForward(name, hidden, residual);
      let skip = o.parallel ? hidden : pre.residual;
      if (o.originalLnAfter) skip = tf.add(skip, residual);
      const scale = a.scaleOf(pre.hidden) ?? undefined;
      return bottleneckAdapterOp(
        { x: a.normBefore(pre.hidden), residual: skip, downWeight: a.down.weight, downBias: a.down.bias!, upWeight: a.up.weight, upBias: a.up.bias!, scale },
        { activation: o.activation, scaling: a.fixedScaling },
      );
    }
    const pre = this.preForward(name, hidden, residual);
    const { output } = this.adapterForward(name, pre.hidden, pre.residual);
    return this.postForward(name, output, hidden, residual);
  }

  addResidual(hidden: tf.Tensor, residual: tf.Tensor): tf.Tensor {
    const active = this.disableAdapters ? [] : this.activeAdapters.filter((n) => this.has(n));
    if (!active.length) return this.child<ResidualAdd>('base_layer').addResidual(hidden, residual);
    return tf.tidy(() => {
      if (this.activeComposition) return bottleneckComposedForward(this, this.activeComposition, hidden, residual);
      if (active.length > 1) {
        throw new PeftError(
          'UNSUPPORTED',
          `${active.length} bottleneck adapters are active at layer ${this.layerIdx} ${this.location} (${active.join(', ')}); activate one, or compose them: peft.setActiveAdapters(Stack(...)) (or Parallel, Average, BatchSplit, Fuse …)`,
        );
      }
      return this.adapterOutput(active[0], hidden, residual);
    });
  }

  forward(): tf.Tensor {
    throw new PeftError('INVALID_ARGUMENT', 'BottleneckLayer takes two inputs: call addResidual(hidden, residual)');
  }

  protected mergeOne(): void {
    throw new PeftError('UNSUPPORTED', 'bottleneck adapters cannot be merged: their non-linear branch has no weight to fold into');
  }
  protected unmergeOne(): void {}
  protected deleteOne(name: string): void {
    this.adapters.delete(name); // disposes its parameters
    dropFusionsOf(this, name); // a fusion of the deleted adapter has nothing left to fuse
  }
}
