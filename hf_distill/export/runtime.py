"""An exported model behind the call a PyTorch model answers, so the recipes score it the same way.

:class:`OnnxModel` is an ``nn.Module`` whose ``forward`` runs an ``onnxruntime.InferenceSession``: it takes the
batch a collator gives (``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``, ``labels``)
and returns ``logits`` as a torch tensor, with the task's loss when labels come (what ``Trainer.predict``
reads), so ``task.score_examples(onnx_model, ...)`` and the latency harness need no change. Causal LMs get an
empty past on a plain forward and :meth:`OnnxModel.generate` for greedy decoding over the past keys and values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.utils import ModelOutput

from hf_distill.export.graph import GraphSpec
from hf_distill.export.packages import require_export_packages
from hf_distill.hub.onnx_graphs import EXPORT_MANIFEST
from hf_distill.model_kind import CAUSAL_LM, TOKEN_CLASSIFICATION

MANIFEST = EXPORT_MANIFEST


@dataclass
class OnnxOutput(ModelOutput):
    """What :class:`OnnxModel` returns: ``loss`` (when labels came) and ``logits``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def read_manifest(onnx_path: str | Path) -> GraphSpec:
    """The :class:`~hf_distill.export.graph.GraphSpec` written beside an exported graph."""
    manifest = Path(onnx_path).parent / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest} is missing: an exported graph's inputs are described there by export_student; "
            "export the model with hf_distill.export_student (or `hf-distill export`)."
        )
    return GraphSpec(**json.loads(manifest.read_text())["graph"])


class OnnxModel(nn.Module):
    """An ONNX graph written by :func:`~hf_distill.export.export_student`, called like the model it came from.

    Args:
        path (str | Path): the ``.onnx`` file (its ``export.json`` beside it).
        threads (int | None): ONNX Runtime intra-op threads (set equal to torch's when timing side by side);
            None leaves ONNX Runtime's default.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        require_export_packages()
        import onnxruntime

        self.path, self.threads = Path(path), threads
        self.spec = read_manifest(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # A parameter-less module has no device; the recipes' scorers read one from its parameters.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused: torch.Tensor,
    ) -> OnnxOutput:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        given["pixel_values"] = pixel_values
        feeds = self._feeds({k: v for k, v in given.items() if v is not None})
        logits = torch.from_numpy(self.session.run(["logits"], feeds)[0])
        loss = None if labels is None else self._loss(logits, labels.cpu())
        return OnnxOutput(loss=loss, logits=logits)

    def _feeds(self, given: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        spec = self.spec
        if "pixel_values" in spec.inputs:
            return {"pixel_values": given["pixel_values"].detach().cpu().float().numpy()}
        ids = given["input_ids"].detach().cpu().long()
        mask = given.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.detach().cpu().long()
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        if "token_type_ids" in spec.inputs:
            types = given.get("token_type_ids")
            feeds["token_type_ids"] = (torch.zeros_like(ids) if types is None else types.cpu().long()).numpy()
        if spec.task == CAUSAL_LM:
            # A plain forward numbers positions 0..n-1, as the PyTorch model does without position_ids.
            feeds["position_ids"] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy()
            feeds.update(self.empty_past(ids.shape[0]))
        return feeds

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Past keys and values of length 0, for a causal LM's first call."""
        heads, dim = self.spec.past_shape
        return {name: np.zeros((batch, heads, 0, dim), np.float32) for name in self.spec.past_names()}

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.spec.task == CAUSAL_LM:
            logits, labels = logits[:, :-1], labels[:, 1:]
        if self.spec.task in (CAUSAL_LM, TOKEN_CLASSIFICATION):
            logits = logits.reshape(-1, logits.shape[-1])
        return nn.functional.cross_entropy(logits.float(), labels.reshape(-1).long(), ignore_index=-100)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Greedy decoding: the prompt once, then one token per call over the returned past keys and values.

        Args:
            input_ids (torch.Tensor): ``(batch, prompt)`` left-padded prompts.
            attention_mask (torch.Tensor | None): 0 on padding; all ones when None.
            max_new_tokens (int): tokens to add at most.
            eos_token_id (int | None): a row stops (and is padded with it) once it produced this token.

        Returns:
            torch.Tensor: ``(batch, prompt + new)`` prompt and generated tokens, like ``model.generate``.
        """
        if self.spec.task != CAUSAL_LM:
            raise ValueError(f"generate needs a causal LM graph; {self.path} holds a {self.spec.task} model.")
        ids = input_ids.cpu().long().numpy()
        mask = np.ones_like(ids) if attention_mask is None else attention_mask.cpu().long().numpy()
        # Positions follow the mask (padding does not count), as transformers' generate numbers them.
        positions = np.where(mask == 0, 1, mask.cumsum(-1) - 1)
        past, step_ids, tokens = self.empty_past(ids.shape[0]), ids, [ids]
        done = np.zeros(ids.shape[0], dtype=bool)
        for _ in range(max_new_tokens):
            outputs = self.session.run(
                None, {"input_ids": step_ids, "attention_mask": mask, "position_ids": positions, **past}
            )
            token = outputs[0][:, -1].argmax(-1)
            if eos_token_id is not None:
                token = np.where(done, eos_token_id, token)
                done |= token == eos_token_id
            tokens.append(token[:, None])
            past = dict(zip(self.spec.past_names(), outputs[1:]))
            step_ids = token[:, None].astype(np.int64)
            positions = positions[:, -1:] + 1
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)
            if done.all():
                break
        return torch.from_numpy(np.concatenate(tokens, axis=1))
