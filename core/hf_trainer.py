"""CE-LoRA under ``transformers.Trainer``: a callback that advances τ once per optimizer step, times the
backward components from their profiler scopes now and then, and saves a peft-loadable adapter with every
checkpoint.

    import core
    from core.hf_trainer import CELoRACallback

    core.convert(model, "paper")                  # before the Trainer builds its optimizer
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    CELoRACallback.install(trainer, profile_every=50)
    trainer.train()

Why a callback: τ counts optimizer steps (``CELoRAConfig.tau_unit``), and under gradient accumulation a
Trainer runs several forward/backward passes per optimizer step. ``on_step_end`` fires once per optimizer
step, after ``optimizer.step()``, so the index refreshes every τ optimizer steps, never per micro-batch.
Do not also call ``core.attach_optimizer``: τ would advance twice per step.

Component times: every ``profile_every`` optimizer steps (0: never), that whole step (all its micro-batches)
runs under ``torch.profiler``, which opens the ``record_function`` scopes of ``core.function`` (closed, they
cost nothing). The summed time of each scope over the step goes into the next log as ``celora/<scope>_ms``
(and ``celora/refreshes``, the index refreshes so far). On CUDA the device time is read where the profiler
has it, else the host time. ``install`` puts the callback first, so the progress bar and the reporting
integrations (which run in list order) see these keys; passed as ``Trainer(callbacks=[...])`` it runs after
them, and the keys still reach ``trainer.state.log_history`` and every callback after it.
"""
from __future__ import annotations

import os

import torch
from transformers import TrainerCallback

from core.convert import save_adapter
from core.flops import COMPONENTS
from core.layer import celora_modules, step
from core.scopes import SELECTION

SCOPES = COMPONENTS + (SELECTION,)
ADAPTER_DIR = "celora-adapter"        # inside each checkpoint-<step> folder


class CELoRACallback(TrainerCallback):
    """Advances CE-LoRA's τ counter once per optimizer step; optionally times the backward components and
    saves a peft adapter with each checkpoint.

    Args:
        profile_every: profile one optimizer step in this many (0: never). Profiling slows that step.
        save_adapters: write ``<checkpoint>/celora-adapter`` (adapter_config.json and
            adapter_model.safetensors, loadable by ``peft.PeftModel.from_pretrained``) at each save.
        base_model_name_or_path: written into the adapter's config.

    Attributes:
        history: one dict per profiled step: {"step": n, "celora/<scope>_ms": ..., ...}.
    """

    def __init__(self, profile_every: int = 0, save_adapters: bool = True, base_model_name_or_path: str | None = None):
        if not isinstance(profile_every, int) or profile_every < 0:
            raise ValueError(f"profile_every={profile_every!r} is invalid; allowed: an integer >= 0")
        self.profile_every = profile_every
        self.save_adapters = save_adapters
        self.base = base_model_name_or_path
        self.history: list[dict] = []
        self._prof = None
        self._pending: dict[str, float] = {}

    @classmethod
    def install(cls, trainer, **kwargs) -> "CELoRACallback":
        """A callback added first in trainer's list (see the module docstring); returns it."""
        cb = cls(**kwargs)
        trainer.callback_handler.callbacks.insert(0, cb)
        return cb

    # ---- τ: once per optimizer step ------------------------------------------------------------------

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profile_every and (state.global_step + 1) % self.profile_every == 0:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(activities=acts)
            self._prof.__enter__()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            step(model)                              # the optimizer has stepped: advance τ once
        if self._prof is not None:
            prof, self._prof = self._prof, None
            prof.__exit__(None, None, None)
            times = _scope_ms(prof)
            times["celora/refreshes"] = float(sum(m.refresh_count for m in celora_modules(model))) if model else 0.0
            self.history.append({"step": state.global_step, **times})
            self._pending.update(times)

    def on_train_end(self, args, state, control, **kwargs):
        if self._prof is not None:                   # training stopped inside a profiled step
            self._prof.__exit__(None, None, None)
            self._prof = None

    # ---- logs and adapters ---------------------------------------------------------------------------

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._pending or logs is None:
            return
        logs.update(self._pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._pending)   # the Trainer stored its copy before calling us
        self._pending = {}

    def on_save(self, args, state, control, model=None, **kwargs):
        if not self.save_adapters or model is None or not state.is_world_process_zero:
            return
        if not celora_modules(model):
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", ADAPTER_DIR)
        save_adapter(model, folder, self.base)


def _scope_ms(prof) -> dict[str, float]:
    """celora/<scope>_ms: each component scope's time summed over the profiled step, in milliseconds."""
    out = {}
    for ev in prof.key_averages():
        if ev.key in SCOPES:
            device_us = getattr(ev, "device_time_total", 0) or 0
            out[f"celora/{ev.key}_ms"] = (device_us or ev.cpu_time_total) / 1e3
    return out
