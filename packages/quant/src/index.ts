export * from './bnb';
