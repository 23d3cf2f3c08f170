import * as tf from '@tensorflow/tfjs';
import { Linear, PeftError } from '@peftjs/core';
import {
  BLOCKSIZE,
  dequantize4bit,
  dequantizeAbsmax,
  doubleQuantize,
  dynamicMap,
  packBytes,
  quantize4bit,
  unpackWords,
  type QuantType,
} from './bnb';
import { dequant4bitLinear, dequantReference, type Dequant4bitInputs } from './op';
import { registerDequantWebgpu } from './webgpu';

registerDequantWebgpu();

/** HF's warning when a LoRA update is merged into a 4-bit base (peft/tuners/lora/bnb.py). */
export const MERGE_4BIT_WARNING = 'Merge lora module to 4-bit linear may get different generations due to rounding errors.';

/** A layer's 4-bit state on the host, in bitsandbytes' own layout (what files hold). */
export interface Linear4bitState {
  quantType: QuantType;
  /** bitsandbytes' bytes, ceil(out·in / 2). */
  packed: Uint8Array;
  /** Plain absmax (float32, one a block of 64) … */
  absmax?: Float32Array;
  /** … or double-quantised: 8-bit codes, nested absmax (one a block of 256), the nested map and offset. */
  nested?: { codes: Uint8Array; nestedAbsmax: Float32Array; nestedMap: Float32Array; offset: number };
}

export interface Linear4bitOptions {
  quantType: QuantType;
  doubleQuant: boolean;
  bias?: tf.Tensor;
}

/** The standard dynamic map as one device tensor shared by the layers that use it (made again after a dispose or a backend switch). */
let sharedMap: { t: tf.Tensor; backend: string } | undefined;
function standardMapTensor(): tf.Tensor {
  if (!sharedMap || sharedMap.t.isDisposed || sharedMap.backend !== tf.getBackend()) {
    sharedMap = { t: tf.keep(tf.tensor1d(dynamicMap())), backend: tf.getBackend() };
  }
  return sharedMap.t;
}
const sameMap = (m: Float32Array) => {
  const s = dynamicMap();
  return m.length === s.length && m.every((v, i) => Object.is(v, s[i]));
};

/**
 * bitsandbytes' Linear4bit: a Linear whose weight [out, in] is held as packed 4-bit codes with
 * blockwise absmax (double-quantised when asked), never as fp32. Its forward is the dequantising
 * matmul op (x·dequant(W)ᵀ + bias); its weight is frozen (gradients reach x, and the bias if trainable).
 *
 * It is a Linear, so LoRA wraps it as its base layer; `weight` is not a parameter while quantised
 * (reading it throws): `dequantize()` gives a transient fp32 copy. Merging a LoRA update into it
 * dequantises it in place (`dequantizeInPlace`), and `requantize()` packs it again (HF's rounding warning).
 */
export class Linear4bit extends Linear {
  readonly quantType: QuantType;
  readonly blocksize = BLOCKSIZE;
  doubleQuant: boolean;
  private qweight?: tf.Tensor;
  private absmaxT?: tf.Tensor;
  private absmaxCodesT?: tf.Tensor;
  private nestedAbsmaxT?: tf.Tensor;
  private nestedMapT?: tf.Tensor;
  private ownsMap = false;
  private offset = 0;

  private constructor(inFeatures: number, outFeatures: number, quantType: QuantType, doubleQuant: boolean, bias?: tf.Tensor) {
    const placeholder = tf.zeros([1, 1]);
    super(inFeatures, outFeatures, { bias: !!bias, weight: placeholder, biasValue: bias });
    placeholder.dispose();
    this.deleteParameter('weight');
    const b = this.maybeParam('bias');
    if (b) b.trainable = false;
    this.quantType = quantType;
    this.doubleQuant = doubleQuant;
  }

  /** Quantises one layer's fp32 weight (row-major [out, in]) on the host. */
  static fromFloat(weight: Float32Array, outFeatures: number, inFeatures: number, opts: Linear4bitOptions, what = 'weight'): Linear4bit {
    if (weight.length !== outFeatures * inFeatures) {
      throw new PeftError('SHAPE_MISMATCH', `${what}: ${weight.length} values for a [${outFeatures}, ${inFeatures}] weight`);
    }
    const layer = new Linear4bit(inFeatures, outFeatures, opts.quantType, opts.doubleQuant, opts.bias);
    layer.setState(quantizeState(weight, opts.quantType, opts.doubleQuant, what));
    return layer;
  }

  /** A layer from bitsandbytes' state (e.g. read from a transformers checkpoint). */
  static fromState(state: Linear4bitState, outFeatures: number, inFeatures: number, bias?: tf.Tensor): Linear4bit {
    const layer = new Linear4bit(inFeatures, outFeatures, state.quantType, !!state.nested, bias);
    layer.setState(state);
    return layer;
  }

  get isQuantized(): boolean {
    return !!this.qweight;
  }

  private setState(s: Linear4bitState): void {
    const n = this.outFeatures * this.inFeatures;
    const blocks = Math.ceil(n / BLOCKSIZE);
    if (s.packed.length !== (n + 1) >> 1) throw new PeftError('SHAPE_MISMATCH', `Linear4bit: ${s.packed.length} packed bytes for ${n} weights (expected ${(n + 1) >> 1})`);
    this.freeState();
    this.qweight = tf.keep(tf.tensor1d(packBytes(s.packed), 'int32'));
    if (s.nested) {
      if (s.nested.codes.length !== blocks) throw new PeftError('SHAPE_MISMATCH', `Linear4bit: ${s.nested.codes.length} absmax codes for ${blocks} blocks`);
      if (s.nested.nestedAbsmax.length !== Math.ceil(blocks / 256)) throw new PeftError('SHAPE_MISMATCH', `Linear4bit: ${s.nested.nestedAbsmax.length} nested absmax values for ${blocks} blocks`);
      if (s.nested.nestedMap.length !== 256) throw new PeftError('SHAPE_MISMATCH', `Linear4bit: nested_quant_map has ${s.nested.nestedMap.length} entries, not 256`);
      this.absmaxCodesT = tf.keep(tf.tensor1d(packBytes(s.nested.codes), 'int32'));
      this.nestedAbsmaxT = tf.keep(tf.tensor1d(s.nested.nestedAbsmax));
      this.ownsMap = !sameMap(s.nested.nestedMap);
      this.nestedMapT = this.ownsMap ? tf.keep(tf.tensor1d(s.nested.nestedMap)) : standardMapTensor();
      this.offset = Math.fround(s.nested.offset);
      this.doubleQuant = true;
    } else {
      if (!s.absmax || s.absmax.length !== blocks) throw new PeftError('SHAPE_MISMATCH', `Linear4bit: absmax has ${s.absmax?.length ?? 0} values for ${blocks} blocks`);
      this.absmaxT = tf.keep(tf.tensor1d(s.absmax));
      this.offset = 0;
      this.doubleQuant = false;
    }
  }

  private freeState(): void {
    for (const t of [this.qweight, this.absmaxT, this.absmaxCodesT, this.nestedAbsmaxT]) t?.dispose();
    if (this.ownsMap) this.nestedMapT?.dispose();
    this.qweight = this.absmaxT = this.absmaxCodesT = this.nestedAbsmaxT = this.nestedMapT = undefined;
    this.ownsMap = false;
  }

  private weightInputs(): Omit<Dequant4bitInputs, 'x'> {
    if (!this.qweight) throw new PeftError('INVALID_ARGUMENT', 'Linear4bit: not quantised (dequantised in place)');
    return this.doubleQuant
      ? { qweight: this.qweight, absmaxCodes: this.absmaxCodesT, nestedAbsmax: this.nestedAbsmaxT, nestedMap: this.nestedMapT }
      : { qweight: this.qweight, absmax: this.absmaxT };
  }

  private attrs() {
    return { outFeatures: this.outFeatures, inFeatures: this.inFeatures, quantType: this.quantType, offset: this.offset };
  }

  override get weight(): tf.Variable {
    const w = this.maybeParam('weight');
    if (w) return w;
    throw new PeftError(
      'UNSUPPORTED',
      `Linear4bit(${this.inFeatures}, ${this.outFeatures}) holds its weight as 4-bit codes: use dequantize() for an fp32 copy (or dequantizeInPlace())`,
    );
  }

  override forward(x: tf.Tensor): tf.Tensor {
    if (!this.qweight) return super.forward(x);
    return tf.tidy(() => dequant4bitLinear(x, this.weightInputs(), this.attrs(), this.bias));
  }

  /** The fp32 weight [out, in] (a new tensor, this layer's only; bitsandbytes' dequantize_4bit). */
  dequantize(): tf.Tensor2D {
    const w = this.maybeParam('weight');
    if (w) return tf.clone(w) as tf.Tensor2D;
    return dequantReference(this.weightInputs(), this.attrs());
  }

  /** Replaces the codes by an fp32 weight parameter (frozen) — what merging a LoRA update into this layer needs. */
  dequantizeInPlace(): void {
    if (!this.qweight) return;
    const w = this.dequantize();
    this.registerParameter('weight', w, false, true);
    this.freeState();
  }

  /** Quantises the fp32 weight again (after a merge); asynchronous: the weight is read back once. */
  async requantize(onWarning: (msg: string) => void = console.warn): Promise<void> {
    const w = this.maybeParam('weight');
    if (!w) return;
    onWarning(MERGE_4BIT_WARNING);
    const data = (await w.data()) as Float32Array;
    this.setState(quantizeState(data, this.quantType, this.doubleQuant, 'merged weight'));
    this.deleteParameter('weight');
  }

  /** This layer's state in bitsandbytes' layout (asynchronous reads of the device tensors). */
  async state(): Promise<Linear4bitState> {
    if (!this.qweight) throw new PeftError('INVALID_ARGUMENT', 'Linear4bit: dequantised in place; call requantize() first');
    const n = this.outFeatures * this.inFeatures;
    const blocks = Math.ceil(n / BLOCKSIZE);
    const packed = unpackWords((await this.qweight.data()) as Int32Array, (n + 1) >> 1);
    if (!this.doubleQuant) return { quantType: this.quantType, packed, absmax: Float32Array.from(await this.absmaxT!.data()) };
    return {
      quantType: this.quantType,
      packed,
      nested: {
        codes: unpackWords((await this.absmaxCodesT!.data()) as Int32Array, blocks),
        nestedAbsmax: Float32Array.from(await this.nestedAbsmaxT!.data()),
        nestedMap: Float32Array.from(await this.nestedMapT!.data()),
        offset: this.offset,
      },
    };
  }

  /**
   * Bytes the base weight takes on the device: packed codes, absmax (or its codes, nested absmax and
   * offset), and the nested map when this layer has its own (the standard one is shared by all layers).
   */
  /** The weights held packed (not as a parameter): what `getNbTrainableParameters` counts for this layer. */
  packedWeightCount(): number {
    return this.qweight ? this.outFeatures * this.inFeatures : 0;
  }

  storageBytes(): number {
    if (!this.qweight) return 4 * this.outFeatures * this.inFeatures;
    let b = 4 * this.qweight.size;
    if (this.doubleQuant) b += 4 * this.absmaxCodesT!.size + 4 * this.nestedAbsmaxT!.size + 4 + (this.ownsMap ? 4 * 256 : 0);
    else b += 4 * this.absmaxT!.size;
    return b;
  }

  override dispose(): void {
    this.freeState();
    super.dispose();
  }

  /** Frees the codes and scales (a model's dispose() calls this on every module: they are not parameters). */
  disposeBuffers(): void {
    this.freeState();
  }
}

/** bitsandbytes' quantize_4bit (+ compress_statistics) on the host. */
export function quantizeState(weight: Float32Array, quantType: QuantType, doubleQuant: boolean, what = 'weight'): Linear4bitState {
  const q = quantize4bit(weight, quantType, what);
  if (!doubleQuant) return { quantType, packed: q.packed, absmax: q.absmax };
  const dq = doubleQuantize(q.absmax);
  return { quantType, packed: q.packed, nested: { codes: dq.codes, nestedAbsmax: dq.nestedAbsmax, nestedMap: dynamicMap(), offset: dq.offset } };
}

/** The fp32 weight of a state, on the host (the reference of dequantize()). */
export function dequantizeState(s: Linear4bitState, n: number): Float32Array {
  const absmax = s.nested ? dequantizeAbsmax(s.nested.codes, s.nested.nestedAbsmax, s.nested.offset, s.nested.nestedMap) : s.absmax!;
  return dequantize4bit(s.packed, absmax, n, s.quantType);
}
