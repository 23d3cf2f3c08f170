// The parameter counts docs/methods/adapters.md gives for each preset on the bundled tiny-llama.
import { expect, it } from 'vitest';
import { getPeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { DoubleSeqBnConfig, MAMConfig, ParBnConfig, SeqBnConfig, UniPELTConfig, type ConfigUnion } from './index';

it('trainable parameters of each preset on tiny-llama (as documented)', async () => {
  const lines: Record<string, string> = {};
  for (const [name, make] of [
    ['SeqBnConfig', () => new SeqBnConfig()],
    ['DoubleSeqBnConfig', () => new DoubleSeqBnConfig()],
    ['ParBnConfig', () => new ParBnConfig()],
  ] as const) {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(tinyLlamaDir()), make());
    lines[name] = peft.printTrainableParameters(() => {});
    peft.dispose();
  }
  // the unions: each member's trainable parameters on its own model (a prefix beside injected adapters is the composition's)
  for (const [name, union] of [['MAMConfig', new MAMConfig()], ['UniPELTConfig', new UniPELTConfig()]] as [string, ConfigUnion][]) {
    const parts: number[] = [];
    for (const [, config] of union.expand('x')) {
      const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(tinyLlamaDir()), config);
      parts.push(peft.getNbTrainableParameters()[0]);
      peft.dispose();
    }
    lines[name] = parts.map((n) => n.toLocaleString('en-US')).join(' + ');
  }
  console.log(lines);
  expect(lines).toEqual({
    SeqBnConfig: 'trainable params: 33,856 || all params: 3,984,704 || trainable%: 0.8496',
    DoubleSeqBnConfig: 'trainable params: 67,712 || all params: 4,018,560 || trainable%: 1.6850',
    ParBnConfig: 'trainable params: 263,680 || all params: 4,214,528 || trainable%: 6.2565',
    MAMConfig: '927,264 + 263,680',
    UniPELTConfig: '28,672 + 592,640 + 34,884',
  });
});
