// The runnable example of docs/methods/qlora.md, as written there (a short QLoRA run on the bundled model).
import { expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';

it('docs/methods/qlora.md example runs', async () => {
  const logs: string[] = [];
  const log = (s: string) => logs.push(s);
  // --- example (docs/methods/qlora.md) ---
  const { getPeftModel, TaskType } = await import('@peftjs/core');
  const { AutoModelForCausalLM, AutoTokenizer } = await import('@peftjs/models');
  const { LoraConfig } = await import('@peftjs/lora');
  const { BitsAndBytesConfig, prepareModelForKbitTraining, Linear4bit } = await import('@peftjs/quant');
  const { tinyLlamaDir } = await import('@peftjs/tiny-llama');

  const dir = tinyLlamaDir();
  const quantizationConfig = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'float32' });
  const base = prepareModelForKbitTraining(await AutoModelForCausalLM.fromPretrained(dir, { quantizationConfig }));
  let bytes = 0;
  let params = 0;
  for (const [, m] of base.namedModules()) {
    if (m instanceof Linear4bit) {
      bytes += m.storageBytes();
      params += m.inFeatures * m.outFeatures;
    }
  }
  log(`base linear weights: ${((8 * bytes) / params).toFixed(3)} bits per parameter`);

  const model = getPeftModel(base, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: 'all-linear', taskType: TaskType.CAUSAL_LM }));
  const tok = await AutoTokenizer.fromPretrained(dir);
  const ids = [tok.encode('Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse').slice(0, 20)];
  const opt = tf.train.adam(5e-3);
  model.train();
  for (let step = 0; step < 8; step++) {
    const loss = opt.minimize(() => {
      const out = model.forward({ inputIds: ids, labels: ids });
      out.logits.dispose();
      return out.loss as tf.Scalar;
    }, true, model.trainableParameters())!;
    log(`step ${step}: loss ${(await loss.data())[0].toFixed(4)}`);
    loss.dispose();
  }
  await model.savePretrained('/tmp/peftjs-qlora-example'); // a plain LoRA adapter (adapter_config.json + adapter_model.safetensors)
  // --- end of example ---
  console.log(logs.join('\n'));
  expect(logs[0]).toMatch(/4\.127 bits/);
  const l = logs.slice(1).map((s) => Number(s.split('loss ')[1]));
  expect(l[7]).toBeLessThan(l[0]);
  opt.dispose();
  model.dispose();
});
