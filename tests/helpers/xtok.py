"""Two small tokenizers that split text differently, and tiny GPT-2 models over them, for the cross-tokenizer
tests: a byte-level BPE (``Ġ`` spellings, a BOS and an EOS) as the teacher's, and a SentencePiece-style BPE
(``▁`` spellings, byte fallback, an EOS and no BOS) as the student's. Both are fast tokenizers trained here
on a few lines of text, so nothing is downloaded.
"""

from __future__ import annotations

import json

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.token_alignment import TEXT_COLUMN
from tests.helpers.tiny_models import make_sentences
from tests.helpers.tiny_models import tiny_gpt2 as gpt2

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "the café costs 5 € — naïve 日本語 text",
    "  leading spaces and\ttabs",
    *make_sentences(40, seed=3),
]


def byte_level_tokenizer(vocab_size: int = 320, bos: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE like GPT-2 / Llama 3 (``Ġ`` for spaces); ``<s>`` prepended when ``bos``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXTS * 3, trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        name_or_path="tiny-bytes",
    )


def metaspace_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE (``▁`` for spaces, ``<0xNN>`` byte fallback) with an EOS and no BOS."""
    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.Replace(" ", "▁")
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trained.train_from_iterator(
        TEXTS * 3, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["</s>"])
    )
    learned = json.loads(trained.to_str())["model"]
    # The byte pieces belong to the model's vocabulary (byte fallback looks them up there), not to the
    # special tokens.
    vocab = {"</s>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}}
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens(["</s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="</s>", name_or_path="tiny-spm"
    )


def tiny_gpt2(vocab_size: int, *, hidden: int = 16, layers: int = 1, seed: int = 0, tied: bool = True):
    """The cross-tokenizer tests' GPT-2: the one builder of tests/helpers/tiny_models.py at their sizes, no BOS/EOS
    ids, in eval mode."""
    return gpt2(
        seed, vocab_size, hidden, layers, positions=128, bos_token_id=None, eos_token_id=None, tied=tied
    ).eval()


def make_args(tmp_path, **kw):
    settings = dict(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-2,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        temperature=2.0,
        alpha=1.0,
        cross_tokenizer_loss="aligned",
        disable_tqdm=True,
    )
    settings.update(kw)
    return DistillationTrainingArguments(**settings)


def texts_dataset(n=12):
    return Dataset.from_dict({TEXT_COLUMN: TEXTS[:n]})


def trainer_for(tmp_path, student_tokenizer, teacher_tokenizer, train, teacher="model", **kw):
    teacher_model = tiny_gpt2(len(teacher_tokenizer), seed=1) if teacher == "model" else teacher
    return DistillationTrainer(
        model=tiny_gpt2(len(student_tokenizer), seed=2),
        teacher_model=teacher_model,
        args=make_args(tmp_path, **kw),
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(student_tokenizer, mlm=False),
        processing_class=student_tokenizer,
        teacher_processing_class=teacher_tokenizer,
    )


def first_batch(trainer, rows):
    return trainer.data_collator([dict(trainer.train_dataset[i]) for i in rows])
