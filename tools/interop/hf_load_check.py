"""Loads adapters saved by peftjs (save-adapter.mjs) with HF transformers + PEFT and compares HF's logits
with ours at every position the attention mask keeps. Run on the device machine, where torch,
transformers and peft are installed:  python3 tools/interop/hf_load_check.py OUTDIR"""
import sys, os, json, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import PeftModel
import peft, transformers

out = sys.argv[1]
fixtures = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'hf-peft')
bases = {'llama_lora': 'llama_lora_qv', 'llama_dora_rslora': 'llama_lora_qv', 'gpt2_lora': 'gpt2_lora_cattn', 'qwen2_lora_all_linear': 'qwen2_lora'}
print(f'transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}')
worst = 0.0
for name in sorted(os.listdir(out)):
    d = os.path.join(out, name)
    if not os.path.isdir(d): continue
    ours = load_file(os.path.join(d, 'ours.safetensors'))
    base = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, bases[name], 'base'), dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, os.path.join(d, 'adapter')).eval()
    with torch.no_grad():
        hf = model(input_ids=ours['input_ids'].long(), attention_mask=ours['attention_mask'].long()).logits.float()
    keep = ours['attention_mask'].bool().unsqueeze(-1)
    diff = ((hf - ours['logits']).abs() * keep).max().item()
    scale = (hf.abs() * keep).max().item()
    with torch.no_grad(), model.disable_adapter():
        plain = model(input_ids=ours['input_ids'].long(), attention_mask=ours['attention_mask'].long()).logits.float()
    effect = ((hf - plain).abs() * keep).max().item()
    worst = max(worst, diff / scale)
    cfg = json.load(open(os.path.join(d, 'adapter', 'adapter_config.json')))
    print(f'{name}: peft_type {cfg["peft_type"]}, HF vs peftjs max |diff| {diff:.3e} of max |logit| {scale:.3f} (rel {diff/scale:.2e}); adapter moves logits by {effect:.3f}')
print(f'worst relative difference {worst:.2e} -> {"PASS" if worst < 1e-4 else "FAIL"} (tolerance 1e-4)')
