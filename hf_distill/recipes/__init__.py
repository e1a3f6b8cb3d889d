"""The recipe layer: what ``recipes/*.py`` and the ``hf-distill`` command need on top of the core, one concept
per module:

* :mod:`.arguments`: the recipe's argument dataclasses and the :class:`~.arguments.RecipeConfig` holding them
  by name, read by :func:`~.arguments.parse_recipe_config`;
* :mod:`.config`: ``--config`` YAML/JSON files merged with command-line flags;
* :mod:`.mode_select`: a distillation mode's trainer, arguments class and training data;
* :mod:`.data_common`, :mod:`.data_sentiment`, :mod:`.data_ner`, :mod:`.data_code`: the datasets the
  recipes distil on, offline by default;
* :mod:`.tasks`: each task as a :class:`~.tasks.TaskData` (splits, collator, metric);
* :mod:`.teacher`, :mod:`.students`, :mod:`.training`: loading / fine-tuning the teacher, building the
  students, training them with and without the teacher (the teacher's outputs computed once for every seed);
* :mod:`.latency`, :mod:`.report_json`, :mod:`.tensorboard_log`: latency, the ``report.json``, TensorBoard;
* :mod:`.run`: the single-task recipe, :func:`~.run.run_recipe`, and the test metrics it scores;
* :mod:`.generation_eval`: the codegen recipe's last step (cross-tokenizer students, generated code);
* :mod:`.multi_task`: the multi-task recipe, one student encoder for several tasks.

The layer may import the core and :mod:`hf_distill.modes`; nothing in those imports it back. Its main entry
points are also exported by :mod:`hf_distill`.
"""
