"""CE-LoRA: LoRA with a computation-efficient activation gradient (arXiv 2502.01378)."""
from core.config import CELoRAConfig
from core.layer import CELoRALinear, LoRALinear, attach_optimizer, celora_modules, step

__all__ = ["CELoRAConfig", "CELoRALinear", "LoRALinear", "attach_optimizer", "celora_modules", "step"]
