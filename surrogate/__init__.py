"""ELM neurons as surrogates of simulated cells: data, fitting, evaluation, ablation.

Modules, one job each:

- `surrogate.data`: NeuronIO stores as training windows and evaluation windows, splits.
- `surrogate.metrics`: the published spike (ROC) and soma metrics.
- `surrogate.evaluate`: the published evaluation protocol and its report
  (`python -m surrogate.evaluate`).
- `surrogate.fit`: fitting with presets, checkpoints and resume (`python -m surrogate.fit`).
- `surrogate.config`: the fit configuration, presets and their options.
- `surrogate.model_file`: the surrogate model file (`best.pt` of a fit).
  Run folders are `elmbridge.runs`.
- `surrogate.ablate`: fits over memory sizes d_m (`python -m surrogate.ablate`).
- `surrogate.neuronio_import`: the published NeuronIO pickles → a store.
"""
