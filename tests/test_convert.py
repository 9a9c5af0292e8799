"""core.convert on transformers and peft models; adapters that peft loads; tau under checkpointing."""
import peft
import pytest
import torch

import core
from celora_bench import models


def tiny(layers=2, seed=0):
    return models.build_model("tiny", seed=seed)


def ids(seed=0, batch=2, seq=16):
    return torch.randint(0, 512, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_paper_preset_on_a_transformers_model():
    model = tiny()
    ref = tiny()
    x = ids()
    summary = core.convert(model, "paper", r=16)
    by = {row.module.split(".")[-1]: row for row in summary}
    assert len(summary) == 4 * 7                            # 4 layers x 7 projections
    assert {p: by[p].keep_ratio for p in by} == {"q_proj": 1.0, "k_proj": 1.0, "gate_proj": 1.0, "v_proj": 0.55,
                                                 "o_proj": 0.55, "up_proj": 0.65, "down_proj": 0.65}
    assert by["v_proj"].r == 14 and by["v_proj"].r0 == 14 and by["q_proj"].r == 16 and by["q_proj"].r0 == 0
    assert "lm_head" not in str(summary) and type(model.lm_head) is torch.nn.Linear
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    with torch.no_grad():   # B = 0 at init: the same function as the base model
        torch.testing.assert_close(model(x).logits, ref(x).logits)


def test_all_preset_and_pattern_plans():
    model = tiny()
    s = core.convert(model, "all", r=8, keep_ratio=0.5)
    assert {row.keep_ratio for row in s} == {0.5} and len(s) == 28
    model = tiny()
    s = core.convert(model, {"*layers.0.*v_proj": core.CELoRAConfig(r=4, keep_ratio=0.25)})
    assert [row.module for row in s] == ["model.layers.0.self_attn.v_proj"]
    with pytest.raises(ValueError, match="unknown plan preset 'fast'"):
        core.convert(tiny(), "fast")
    with pytest.raises(ValueError, match="no module matched"):
        core.convert(tiny(), {"*nothing*": core.CELoRAConfig()})


def _peft_model(seed=0):
    model = peft.get_peft_model(tiny(seed=seed), peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=list(core.convert.__globals__["PROJECTIONS"])))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.02, generator=torch.Generator().manual_seed(len(n)))
    return model


def test_peft_model_converts_in_place_keeping_trained_weights():
    model = _peft_model()
    x = ids()
    with torch.no_grad():
        before = model(x).logits
    summary = core.convert(model, "paper")
    assert len(summary) == 28 and {row.r for row in summary} == {8}
    layer = model.get_submodule("base_model.model.model.layers.0.self_attn.v_proj")
    assert isinstance(layer, core.CELoRALinear) and layer.scale == 2.0 and layer.config.keep_ratio == 0.55
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, before)


def test_saved_adapter_loads_in_peft_with_the_same_outputs(tmp_path):
    model = tiny()
    core.convert(model, "paper", r=16)
    with torch.no_grad():
        for m in core.celora_modules(model):
            m.lora_B.normal_(std=0.02)
    x = ids()
    with torch.no_grad():
        ours = model(x).logits
    core.save_adapter(model, str(tmp_path / "adapter"))
    loaded = peft.PeftModel.from_pretrained(tiny(), str(tmp_path / "adapter"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, ours, atol=1e-5, rtol=1e-5)
    v = loaded.base_model.model.model.layers[0].self_attn.v_proj
    assert v.r["default"] == 14 and v.scaling["default"] == pytest.approx(32 / 14)


def test_tau_counts_optimizer_steps_with_checkpointing_and_eval_forwards():
    model = tiny()
    model.config.use_cache = False
    core.convert(model, "all", r=4, keep_ratio=0.5, tau=3)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    core.attach_optimizer(opt, model)
    layers = core.celora_modules(model)
    for step in range(7):
        for micro in range(2):                                   # gradient accumulation
            x = ids(seed=10 * step + micro)
            model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        model.eval()
        with torch.no_grad():
            model(ids(seed=99))                                  # an evaluation forward
        model.train()
    # refreshes at steps 0, 3, 6: never per micro-batch, recompute or eval forward
    assert all(m.steps == 7 and m.refresh_count == 3 for m in layers)


def test_svd_cache_second_conversion_computes_no_svd(monkeypatch):
    from core import selection
    calls = []
    real = selection.svd_split

    def counted(W0, r0):
        calls.append((tuple(W0.shape), r0))
        return real(W0, r0)
    monkeypatch.setattr(selection, "svd_split", counted)
    cache = {}
    first = tiny()
    core.convert(first, "all", r=16, keep_ratio=0.5, svd_cache=cache)
    assert len(calls) == len(cache) == 4 * 7 and {r0 for _, r0 in calls} == {14}   # one SVD per W0
    second = tiny()                                          # the same seed-0 weights, built again
    summary = core.convert(second, "paper", r=16, svd_cache=cache)
    assert len(calls) == 4 * 7                               # paper's sampled layers: all cached, no SVD
    reference = tiny()
    core.convert(reference, "paper", r=16)                   # no cache: its own SVDs
    sampled = [row.module for row in summary if row.r0]
    assert len(sampled) == 4 * 4
    assert sampled, 'nothing to check: the loop below would pass vacuously'
    for name in sampled:
        got, want = second.get_submodule(name), reference.get_submodule(name)
        assert torch.equal(got.B0, want.B0) and torch.equal(got.A0, want.A0)
        assert got.B0 is first.get_submodule(name).B0       # shared, not copied


def test_convert_computes_the_factors_with_the_svd_function_it_is_given():
    from core import selection
    calls = []

    def counted(W0, r0):
        calls.append(r0)
        return selection.svd_split(W0, r0)
    core.convert(tiny(), "all", r=16, keep_ratio=0.5, svd=counted)
    assert calls == [14] * (4 * 7)                           # no cache: once per converted W0
    cache = {}
    core.convert(tiny(), "all", r=16, keep_ratio=0.5, svd=counted, svd_cache=cache)
    core.convert(tiny(), "all", r=16, keep_ratio=0.5, svd=counted, svd_cache=cache)
    assert len(calls) == 2 * 4 * 7                           # with a cache: only for the keys not there


def test_svd_cache_refuses_factors_of_another_weight():
    cache = {}
    core.convert(tiny(seed=0), "all", r=16, svd_cache=cache)
    with pytest.raises(ValueError, match="svd_cache holds factors for model.layers.0.self_attn.q_proj"):
        core.convert(tiny(seed=1), "all", r=16, svd_cache=cache)


def test_the_harness_and_core_agree_on_the_projection_order():
    """The harness's model registry owns the order tables and plots use; core.convert keeps its own copy."""
    from core.convert import PROJECTIONS as CORE
    assert models.PROJECTIONS == CORE
    assert tuple(models.get("llama-3.2-1b").layer_shapes()) == CORE
