"""CE-LoRA: LoRA with a computation-efficient activation gradient (arXiv 2502.01378)."""
from core.config import CELoRAConfig
from core.convert import Conversion, adapter_state_dict, convert, preset, save_adapter
from core.layer import CELoRALinear, LoRALinear, attach_optimizer, celora_modules, step

__all__ = ["CELoRAConfig", "CELoRALinear", "Conversion", "LoRALinear", "adapter_state_dict", "attach_optimizer",
           "celora_modules", "convert", "preset", "save_adapter", "step"]
