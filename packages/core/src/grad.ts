import * as tf from '@tensorflow/tfjs';

/**
 * Backward passes that free memory as they go, as PyTorch's autograd does.
 *
 * tfjs's `engine.gradients` (behind tf.grad, tf.grads, tf.variableGrads, optimizers) keeps every tensor
 * saved for the backward pass and every intermediate gradient until the whole backward pass is over, so
 * the peak of a training step is the forward's activations plus the gradient of every intermediate
 * tensor. Here each tape node's saved tensors are released as soon as its gradient has been computed,
 * and each intermediate gradient as soon as the node that consumed it is done. The arithmetic and its
 * order are exactly tfjs's (same nodes, same accumulation order), so results are bit-identical; only
 * the lifetime of temporaries changes.
 *
 * Installed once on the engine (`installFrugalGradients`, which core does on import); higher-order
 * gradients (a tape recorded while another is being recorded) keep tfjs's behaviour.
 */

interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  gradients: (f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor, allowNoGradients?: boolean) => { value: tf.Tensor; grads: tf.Tensor[] };
  scopedRun: (start: () => void, end: () => void, f: () => tf.Tensor) => tf.Tensor;
  startTape: () => void;
  endTape: () => void;
  tidy: <T extends tf.TensorContainer>(nameOrFn: string | (() => T), fn?: () => T) => T;
  __peftjsFrugal?: boolean;
}

/** The nodes on a path from some x to y, each with its inputs pruned to those that depend on an x. */
function nodesBetween(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodeFromX = new Set<number>();
  for (const node of tape) {
    for (const name in node.inputs) {
      if (fromX.has(node.inputs[name].id)) {
        for (const o of node.outputs) fromX.add(o.id);
        nodeFromX.add(node.id);
        break;
      }
    }
  }
  const toY = new Set<number>([y.id]);
  const nodeToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => toY.has(o.id))) {
      for (const name in node.inputs) toY.add(node.inputs[name].id);
      nodeToY.add(node.id);
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!nodeFromX.has(node.id) || !nodeToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const name in node.inputs) if (fromX.has(node.inputs[name].id)) inputs[name] = node.inputs[name];
    out.push({ ...node, inputs, outputs: node.outputs });
  }
  return out;
}

function backprop(engine: EngineInternals, grads: Map<number, tf.Tensor>, nodes: TapeNode[], keep: Set<number>, frugal: boolean): void {
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    const dys = node.outputs.map((o) => grads.get(o.id) ?? null);
    if (!node.gradient) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
    const inputGrads = node.gradient(dys);
    for (const name in node.inputs) {
      if (!(name in inputGrads)) throw new Error(`Cannot backprop through input ${name}. Available gradients found: ${Object.keys(inputGrads)}.`);
      const dx = engine.tidy(() => inputGrads[name]());
      if (dx.dtype !== 'float32') throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' dtype, but has '${dx.dtype}'`);
      const x = node.inputs[name];
      if (!tf.util.arraysEqual(dx.shape, x.shape)) {
        throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`);
      }
      const prev = grads.get(x.id);
      if (prev == null) grads.set(x.id, dx);
      else {
        grads.set(x.id, tf.add(prev, dx));
        prev.dispose();
      }
    }
    if (!frugal) continue;
    // this node is done: what it saved and the gradients of its outputs are needed by nobody else
    for (const t of node.saved ?? []) t.dispose();
    for (const o of node.outputs) {
      if (keep.has(o.id)) continue;
      const g = grads.get(o.id);
      if (!g) continue;
      grads.delete(o.id);
      // a gradient function may have passed dy itself on as an input's gradient: free only unshared ones
      let shared = false;
      for (const v of grads.values()) if (v === g) shared = true;
      if (!shared) g.dispose();
    }
  }
}

let disabled = false;
/** Switches the early freeing off (tfjs's own backward pass) or on; for comparisons and debugging. */
export function setFrugalGradients(on: boolean): void {
  disabled = !on;
}

/** Replaces tfjs's engine.gradients with the memory-frugal backward pass (idempotent). */
export function installFrugalGradients(): void {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.__peftjsFrugal) return;
  const original = engine.gradients;
  engine.__peftjsFrugal = true;
  engine.gradients = function (this: EngineInternals, f, xs, dy, allowNoGradients = false) {
    if (disabled) return original.call(this, f, xs, dy, allowNoGradients);
    tf.util.assert(xs.length > 0, () => 'gradients() received an empty list of xs.');
    if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
    const y = this.scopedRun(
      () => this.startTape(),
      () => this.endTape(),
      () => this.tidy('forward', f),
    );
    tf.util.assert(y instanceof tf.Tensor, () => 'The result y returned by f() must be a tensor.');
    const tape = this.state.activeTape ?? [];
    const nodes = nodesBetween(tape, xs, y);
    if (!allowNoGradients && nodes.length === 0 && xs.length > 0) {
      throw new Error('Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.');
    }
    const outermost = this.state.gradientDepth === 0;
    return this.tidy('backward', () => {
      const grads = new Map<number, tf.Tensor>();
      grads.set(y.id, dy == null ? tf.ones(y.shape) : dy);
      // gradients that must survive: those of the sources, and the caller's dy
      const keep = new Set<number>(xs.map((x) => x.id));
      if (dy != null) keep.add(y.id);
      backprop(this, grads, nodes, keep, outermost);
      const out = xs.map((x) => grads.get(x.id) as tf.Tensor);
      if (this.state.gradientDepth === 0) {
        for (const node of tape) for (const t of node.saved ?? []) t.dispose();
        this.state.activeTape = null;
      }
      return { value: y, grads: out } as unknown as tf.TensorContainer;
    }) as unknown as { value: tf.Tensor; grads: tf.Tensor[] };
  };
}

installFrugalGradients();
