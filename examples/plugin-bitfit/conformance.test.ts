// The third-party plugin passes the same conformance suite as the built-in methods, imported from the public
// testing export (@peftjs/core/testing) as any plugin author would, its training step taken by the Trainer's AdamW.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { AdamW } from '@peftjs/trainer';
import { BitFitConfig } from './index';
import { hfCase } from '../../tools/testing/fixtures';

registerMethodConformance(
  {
    name: 'plugin BitFit',
    model: () => AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`), // Qwen2: q/k/v have biases to merge into
    config: () => new BitFitConfig({ targetModules: ['q_proj', 'k_proj'] }),
    promises: { identityAtInit: true, merge: true },
    // no weight decay: a parameter the loss does not reach must stay unchanged, and the check sees it
    optimizer: (params) => {
      const opt = new AdamW([...params], { weightDecay: 0 });
      return { step: (grads) => opt.step(grads, 1e-2), dispose: () => opt.dispose() };
    },
  },
  { describe, it },
);
