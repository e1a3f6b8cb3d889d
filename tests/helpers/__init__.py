"""What several test modules share, imported the same way everywhere: ``from tests.helpers.<module> import ...``.

- ``paths``: the repository's folders (recipes, benchmarks, notebooks, scripts, golden files);
- ``tiny_models``: tiny random models, sentences and a word-piece tokenizer built from configs;
- ``training``: trainer arguments and small datasets; ``accumulation``: dropout-free models and uneven rows for
  the "same step however the batch is split" tests;
- ``modes``: the mode tests' models and data; ``xtok``: two tokenizers that split text differently;
- ``recipes``: running a recipe script on tiny models; ``run_reports``: fixed ``report.json`` contents;
- ``refusals``: the models and rows of the bad-input tests.
"""
