"""core.hf_trainer under transformers.Trainer with gradient accumulation: τ counts optimizer steps, the component
times reach the logs, and each checkpoint's adapter loads back into peft."""
import os

import peft
import pytest
import torch
from transformers import Trainer, TrainingArguments

import core
from celora_bench import models
from core.hf_trainer import ADAPTER_DIR, CELoRACallback

STEPS, ACCUM = 4, 2


class _Windows(torch.utils.data.Dataset):
    def __init__(self, n=STEPS * ACCUM * 2, seq=24):
        self.x = torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def test_trainer_callback_refreshes_per_optimizer_step_logs_components_and_saves_a_peft_adapter(tmp_path):
    model = models.build_model("tiny-byte", seed=0)
    model.config.use_cache = False
    core.convert(model, "all", r=8, keep_ratio=0.5, tau=1)        # τ = 1: a refresh at every optimizer step
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=2,
                             gradient_accumulation_steps=ACCUM, learning_rate=1e-3, logging_steps=2,
                             save_strategy="steps", save_steps=STEPS, save_only_model=True, report_to=[],
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Windows())
    cb = CELoRACallback.install(trainer, profile_every=2)
    assert trainer.callback_handler.callbacks[0] is cb
    trainer.train()

    layers = core.celora_modules(model)
    # block 0's q/k/v read the embeddings, which need no gradient: no G_x there, so no selection
    sampled = [m for m in layers if m.refresh_count]
    assert len(sampled) == len(layers) - 3
    # once per optimizer step (4), not per micro-batch (8): the first micro-batch of each step refreshes
    assert {m.steps for m in layers} == {STEPS} and {m.refresh_count for m in sampled} == {STEPS}

    logged = [e for e in trainer.state.log_history if "celora/bwd.grad_x_frozen_ms" in e]
    assert [e["step"] for e in logged] == [2, 4] and [h["step"] for h in cb.history] == [2, 4]
    for e in logged:
        for scope in ("fwd.frozen", "fwd.lora", "bwd.grad_h", "bwd.grad_A", "bwd.grad_B", "bwd.grad_x_frozen",
                      "selection"):
            assert e[f"celora/{scope}_ms"] > 0, scope
    assert logged[-1]["celora/refreshes"] == STEPS * len(sampled)
    assert "loss" in logged[-1]                    # the Trainer's own log line, with ours merged into it

    folder = os.path.join(str(tmp_path), f"checkpoint-{STEPS}", ADAPTER_DIR)
    assert os.path.exists(os.path.join(folder, "adapter_model.safetensors"))
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        ours = model(x).logits
        loaded = peft.PeftModel.from_pretrained(models.build_model("tiny-byte", seed=0), folder).eval()
        torch.testing.assert_close(loaded(x).logits, ours, atol=1e-4, rtol=1e-4)
    assert any(m.lora_B.abs().sum() > 0 for m in layers)          # trained: the comparison is not B = 0


def test_profile_every_is_checked():
    with pytest.raises(ValueError, match="profile_every"):
        CELoRACallback(profile_every=-1)
