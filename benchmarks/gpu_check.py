"""GPU check of the fused KD loss: equality with the plain loss, step ratio to the bound, peak memory, latency.

    python benchmarks/gpu_check.py                       # one CUDA device, under 8 minutes on a recent GPU
    python benchmarks/gpu_check.py --device cpu --tiny   # the same plumbing at toy sizes, in seconds

Four parts, one JSON (``$OUT/gpu_check.json`` when ``$OUT`` is set, else ``results/gpu_check[_tiny_cpu].json``):

1. **Equality**, in float32 and bfloat16: the objective of ``bench_causal_lm.loss_from_hidden`` (0.5 * forward
   KL at T = 2 + 0.5 * task cross-entropy, a quarter of the labels -100) computed plain (full logits) and fused
   (chunked, from hidden states), values and gradients (student hidden states and LM head) compared, with a
   float64 plain reference for both. Tolerances: float32 loss rel 1e-5, gradients max |diff| <= 1e-4 * max
   |g|; bfloat16 (inputs rounded to bfloat16; each variant keeps its own internal precision) loss rel 2e-2,
   gradients max |diff| <= 5e-2 * max |g| (bfloat16 has an 8-bit mantissa, relative step 2^-8 = 3.9e-3, and a
   vocabulary-long sum in it loses more).
2. **Step ratio**: one training step of the fused KD step (``DistillationTrainer.compute_loss`` + backward +
   AdamW) over its bound (the teacher's forward + the student's own CE step), as ``bench_causal_lm.py``
   defines both, on its shapes (GPT-2 4x512 teacher, 2x256 student, vocabulary 50257, batch 4 x 256).
3. **Peak memory** of the loss alone (hidden states in, gradients out) at vocabulary 128256 (Llama 3's):
   ``torch.cuda.max_memory_allocated`` above the memory allocated before, plain vs fused, per dtype. On CPU the
   resident-set high-water mark stands in (the plumbing only; CPU numbers come from bench_scaling.py).
4. **Latency**: medians of the loss step (forward + backward) at that vocabulary and of the training steps of
   part 2, each call timed between two ``torch.cuda.synchronize()`` (kernels are asynchronous; without them
   a timer measures the launch), variants interleaved (``_common.time_variants``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, kd_training_step, machine, peak_rss_delta, time_variants  # noqa: E402
from bench_causal_lm import loss_from_hidden, lower_bound_fn  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402

TOLERANCES = {  # (loss relative, gradient max |diff| relative to the reference gradient's max |g|)
    "float32": (1e-5, 1e-4),
    "bfloat16": (2e-2, 5e-2),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FULL = {
    "equality": {"tokens": 2048, "vocab": 128_256, "student": 512, "teacher": 1024},
    "memory": {"tokens": 4096, "vocab": 128_256, "student": 512, "teacher": 1024},
    "step": {"batch": 4, "tokens": 256, "vocab": 50257, "student": (2, 256), "teacher": (4, 512)},
    "rounds": 9,
}
TINY = {
    "equality": {"tokens": 64, "vocab": 512, "student": 16, "teacher": 32},
    "memory": {"tokens": 64, "vocab": 1024, "student": 16, "teacher": 32},
    "step": {"batch": 2, "tokens": 16, "vocab": 128, "student": (1, 16), "teacher": (2, 32)},
    "rounds": 3,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def problem(sizes: dict, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict:
    """Last hidden states and LM heads of both models, and labels with a quarter of them -100."""
    g = torch.Generator().manual_seed(seed)
    n, v = sizes["tokens"], sizes["vocab"]
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.25] = -100
    tensors = {
        "hidden": torch.randn(n, sizes["student"], generator=g),
        "weight": torch.randn(v, sizes["student"], generator=g) * 0.05,
        "t_hidden": torch.randn(n, sizes["teacher"], generator=g),
        "t_weight": torch.randn(v, sizes["teacher"], generator=g) * 0.05,
    }
    out = {k: t.to(dtype).to(device) for k, t in tensors.items()}
    out["labels"] = labels.to(device)
    return out


def loss_and_grads(variant: str, p: dict, dtype: torch.dtype) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The loss and its gradients with respect to the student's hidden states and LM head, in float64."""
    hidden = p["hidden"].to(dtype).detach().requires_grad_()
    weight = p["weight"].to(dtype).detach().requires_grad_()
    loss = loss_from_hidden(
        variant, hidden, weight, p["t_hidden"].to(dtype), p["t_weight"].to(dtype), p["labels"]
    )
    loss.backward()
    return float(loss.detach()), hidden.grad.double(), weight.grad.double()


def compare(got: tuple, want: tuple, tolerance: tuple[float, float]) -> dict:
    """Relative error of the loss and of each gradient (max |diff| / max |reference|), and whether all pass."""
    loss_rel = abs(got[0] - want[0]) / max(abs(want[0]), 1e-12)
    grads = {
        name: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for name, a, b in (("hidden", got[1], want[1]), ("weight", got[2], want[2]))
    }
    finite = all(map(torch.isfinite, (got[1].sum(), got[2].sum()))) and abs(got[0]) < float("inf")
    passed = bool(finite and loss_rel <= tolerance[0] and max(grads.values()) <= tolerance[1])
    return {
        "loss": got[0],
        "loss_rel_diff": loss_rel,
        "grad_rel_diff": grads,
        "finite": bool(finite),
        "passed": passed,
    }


def equality(sizes: dict, device: torch.device) -> dict:
    """Plain vs fused in each dtype, and each against a float64 plain reference on the same rounded inputs."""
    result = {
        "sizes": sizes,
        "tolerances": {k: {"loss_rel": a, "grad_rel": b} for k, (a, b) in TOLERANCES.items()},
    }
    for name, dtype in DTYPES.items():
        p = problem(sizes, device, dtype)
        reference = loss_and_grads("plain", p, torch.float64)
        plain, fused = loss_and_grads("plain", p, dtype), loss_and_grads("fused", p, dtype)
        result[name] = {
            "fused_vs_plain": compare(fused, plain, TOLERANCES[name]),
            "fused_vs_float64": compare(fused, reference, TOLERANCES[name]),
            "plain_vs_float64": compare(plain, reference, TOLERANCES[name]),
        }
    result["passed"] = all(
        result[n][c]["passed"] for n in DTYPES for c in ("fused_vs_plain", "fused_vs_float64")
    )
    return result


def loss_step(variant: str, p: dict) -> Callable[[], None]:
    hidden, weight = p["hidden"].detach().requires_grad_(), p["weight"].detach().requires_grad_()

    def step():
        loss_from_hidden(variant, hidden, weight, p["t_hidden"], p["t_weight"], p["labels"]).backward()
        hidden.grad = weight.grad = None

    return step


def peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Memory the call peaked at above what was allocated before it (CUDA allocator; RSS on CPU)."""
    if device.type != "cuda":
        return peak_rss_delta(fn)
    sync(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def timed(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``fn`` with the device drained before and after, so a timer around it measures the work itself."""

    def call():
        sync(device)
        fn()
        sync(device)

    return call


def medians(times) -> dict:
    return {
        name: {"median_ms": 1e3 * statistics.median(t), "runs_ms": [1e3 * x for x in t]}
        for name, t in times.items()
    }


def memory_and_latency(sizes: dict, device: torch.device, rounds: int) -> dict:
    """Peak memory and latency of the loss step per dtype and variant. A variant that runs out of memory (the
    plain loss on a small GPU) is recorded as such (peak None, in ``out_of_memory``) and not timed."""
    result = {"sizes": sizes, "peak_mib": {}, "latency": {}, "out_of_memory": []}
    for name, dtype in DTYPES.items():
        p = problem(sizes, device, dtype)
        steps = {}
        for v in ("plain", "fused"):
            step = loss_step(v, p)
            try:
                step()  # warm-up: kernels chosen and compiled before the peak is read
                result["peak_mib"][f"{name} {v}"] = peak_bytes(step, device) / 2**20
                steps[v] = step
            except torch.OutOfMemoryError:
                result["peak_mib"][f"{name} {v}"] = None
                result["out_of_memory"].append(f"{name} {v}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        times = time_variants({v: timed(s, device) for v, s in steps.items()}, rounds=rounds)
        result["latency"][name] = medians(times)
        del p, steps
    result["fused_over_plain_peak"] = {
        n: result["peak_mib"][f"{n} fused"] / result["peak_mib"][f"{n} plain"]
        for n in DTYPES
        if result["peak_mib"][f"{n} plain"] and result["peak_mib"][f"{n} fused"] is not None
    }
    return result


def gpt2(layers: int, hidden: int, vocab: int, seed: int, device: torch.device) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=max(hidden // 64, 1),
                        n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config).to(device)


def fused_step_fn(student, teacher, batch, out_dir: str, device: torch.device) -> Callable[[], None]:
    """bench_causal_lm's fused KD step, on ``device`` (there it is on the CPU)."""
    args = DistillationTrainingArguments(
        output_dir=out_dir, report_to="none", use_cpu=device.type == "cpu", alpha=0.5, temperature=2.0,
        kd_loss_implementation="fused",
    )  # fmt: skip
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    return kd_training_step(trainer, student, batch)


def step_ratio(s: dict, device: torch.device, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, s["vocab"], (s["batch"], s["tokens"]), generator=g).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    teacher = gpt2(*s["teacher"], s["vocab"], seed=1, device=device).eval()
    with tempfile.TemporaryDirectory() as out:
        variants = {
            "bound": lower_bound_fn(gpt2(*s["student"], s["vocab"], seed=2, device=device), teacher, batch),
            "fused": fused_step_fn(
                gpt2(*s["student"], s["vocab"], seed=2, device=device), teacher, batch, out, device
            ),
        }
        times = time_variants({k: timed(f, device) for k, f in variants.items()}, rounds=rounds)
    result = {"shapes": s, "latency": medians(times)}
    result["fused_over_bound"] = (
        result["latency"]["fused"]["median_ms"] / result["latency"]["bound"]["median_ms"]
    )
    if device.type == "cpu":
        result["cpu_share"] = {k: {"own": times.own[k], "others": times.others[k]} for k in times}
    return result


def output_path(tiny: bool, device: torch.device) -> Path:
    name = "gpu_check" + ("_tiny" if tiny else "") + ("" if device.type == "cuda" else "_cpu") + ".json"
    return Path(os.environ["OUT"]) / name if os.environ.get("OUT") else RESULTS / name


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the plumbing in seconds")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per variant")
    parser.add_argument("--output", default=None, help="JSON path (default: $OUT or benchmarks/results)")
    options = parser.parse_args(argv)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; on a CPU pass --device cpu --tiny.")
    sizes = TINY if options.tiny else FULL
    rounds = options.rounds or sizes["rounds"]
    start = time.perf_counter()
    result = {"device": str(device), "tiny": options.tiny, "machine": machine()}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
        result["cuda"] = torch.version.cuda
    else:
        result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    for part, run in (
        ("equality", lambda: equality(sizes["equality"], device)),
        ("memory_latency", lambda: memory_and_latency(sizes["memory"], device, rounds)),
        ("step_ratio", lambda: step_ratio(sizes["step"], device, rounds)),
    ):
        part_start = time.perf_counter()
        result[part] = run()
        result[part]["seconds"] = time.perf_counter() - part_start
        print(f"{part}: done in {result[part]['seconds']:.1f} s", flush=True)
    result["seconds"] = time.perf_counter() - start
    path = Path(options.output) if options.output else output_path(options.tiny, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    summary(result, path)
    return result


def summary(r: dict, path: Path) -> None:
    for name in DTYPES:
        e = r["equality"][name]["fused_vs_plain"]
        print(f"{name}: fused vs plain loss rel {e['loss_rel_diff']:.2e}, grads {e['grad_rel_diff']}, "
              f"passed {e['passed']}; peak MiB plain {r['memory_latency']['peak_mib'][name + ' plain']} "
              f"fused {r['memory_latency']['peak_mib'][name + ' fused']}")  # fmt: skip
    print(
        f"fused step / bound: {r['step_ratio']['fused_over_bound']:.3f}; total {r['seconds']:.1f} s -> {path}"
    )


if __name__ == "__main__":
    main()
