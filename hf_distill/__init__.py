"""hf_distill: knowledge distillation for Hugging Face Transformers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
