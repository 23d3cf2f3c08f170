export * from './bnb';
export { dequant4bitMatMulOp, dequant4bitLinear, dequantReference, type Dequant4bitInputs, type Dequant4bitAttrs } from './op';
export { Linear4bit, MERGE_4BIT_WARNING, quantizeState, dequantizeState, type Linear4bitState, type Linear4bitOptions } from './linear4bit';
export { BitsAndBytesConfig, type BitsAndBytesConfigOptions } from './config';
export { loadQuantizedCausalLM, readBnbState, BNB_SUFFIXES, type QuantizedLoadArgs } from './load';
export { saveQuantizedPretrained, bnbTensors, quantStateJson, pyFloat } from './save';
export { prepareModelForKbitTraining, requantizeModel, dequantizeModel, type PrepareKbitOptions } from './prepare';
