"""Running lima-align on many GPUs: accelerate config files, and the sharded path on CPU for tests.

`lima-align train` needs no launcher of its own: the same command runs on one device, under
`torchrun --nproc_per_node N -m lima_align.cli train ...`, or under
`accelerate launch --config_file src/lima_align/configs/fsdp.yaml -m lima_align.cli train ...`.
accelerate reads the launcher's environment (DDP, FSDP or DeepSpeed ZeRO-3) and train.py's
Accelerator picks it up. This module writes those config files (`lima-align config accelerate`)
and estimates the memory a full fine-tune needs, so users can size a cluster before renting it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import LimaError, Problem
from .jsonl import check_output, write_text_atomic

CONFIGS_DIR = Path(__file__).parent / "configs"
Kind = Literal["ddp", "fsdp", "zero3"]
KINDS = ("ddp", "fsdp", "zero3")


# ----------------------------------------------------------------- accelerate config files


def deepspeed_zero3(offload: bool = False) -> dict[str, Any]:
    """A ZeRO-3 config for train.py's loop.

    train.py feeds one packed row per forward pass and marks the last row of each optimizer step
    itself (DeepSpeed steps there), so the micro batch is 1 and accumulation is left at 1; there
    is no dataloader for accelerate to read "auto" batch sizes from. Clipping happens inside
    DeepSpeed (gradient_clipping = LIMA's train.max_grad_norm, 1.0); train.py sets the learning
    rate itself, so there is no scheduler section, and DeepSpeed wraps the AdamW train.py builds.
    """
    cfg: dict[str, Any] = {
        "bf16": {"enabled": True},
        "zero_optimization": {
            "stage": 3, "overlap_comm": True, "contiguous_gradients": True,
            "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # The final checkpoint is a normal HF folder: gather full weights on save.
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
        "zero_allow_untested_optimizer": True,
    }
    if offload:
        for part in ("offload_optimizer", "offload_param"):
            cfg["zero_optimization"][part] = {"device": "cpu", "pin_memory": True}
    return cfg


def accelerate_config(kind: Kind, gpus: int = 8, nodes: int = 1, *, offload: bool = False,
                      deepspeed_file: str | None = None, main_ip: str = "10.0.0.1", port: int = 29500,
                      mixed_precision: str = "bf16") -> dict[str, Any]:
    """The mapping `accelerate launch --config_file` reads, for `gpus` GPUs on each of `nodes` machines."""
    if kind not in KINDS:
        raise LimaError(f"unknown kind {kind!r}", where="--kind", fix=f"one of {', '.join(KINDS)}")
    if gpus < 1 or nodes < 1:
        raise LimaError(f"need at least one GPU and one node, got gpus={gpus} nodes={nodes}", where="--gpus/--nodes",
                        fix="give GPUs per node and nodes as positive counts, e.g. --gpus 8 --nodes 1")
    if offload and kind == "ddp":
        raise LimaError("DDP keeps a full copy of the model on every GPU and cannot offload it",
                        where="--offload", fix="use --kind fsdp or --kind zero3 to offload to CPU memory")
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "debug": False, "downcast_bf16": "no",
        "machine_rank": 0, "main_training_function": "main", "mixed_precision": mixed_precision,
        "num_machines": nodes, "num_processes": gpus * nodes, "rdzv_backend": "static",
        "same_network": True, "use_cpu": False, "gpu_ids": "all",
    }
    if nodes > 1:
        # Every node runs the same file with its own machine_rank (`--machine_rank`).
        cfg.update(main_process_ip=main_ip, main_process_port=port)
    if kind == "ddp":
        cfg["distributed_type"] = "MULTI_GPU" if gpus * nodes > 1 else "NO"
    elif kind == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # one shard unit per decoder layer
            "fsdp_reshard_after_forward": True,  # full shard (ZeRO-3 equivalent)
            "fsdp_offload_params": offload,
            # Resumable state is written shard by shard (no gather); the final checkpoint
            # is gathered into a normal HF folder by train.py (Accelerator.get_state_dict).
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            # Off: with accelerate 1.15 + transformers 5.24 a sharded model with tied embeddings
            # (Gemma) trained differently from one process from step 2 on, and every rank still
            # read the whole checkpoint, so it saved no host memory either.
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_activation_checkpointing": False,  # train.gradient_checkpointing does it
        }
    else:
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {"deepspeed_config_file": deepspeed_file or "zero3.json",
                                   "deepspeed_multinode_launcher": "standard", "zero3_init_flag": True}
        cfg.pop("mixed_precision")  # the JSON file decides (accelerate refuses both)
    return cfg


def write_accelerate_config(path: Path, kind: Kind, gpus: int = 8, nodes: int = 1, *,
                            offload: bool = False) -> list[Path]:
    """Write the YAML (and for zero3 the DeepSpeed JSON beside it); returns the files written."""
    path = check_output(path)
    written = []
    ds_file = None
    if kind == "zero3":
        ds = write_text_atomic(check_output(path.with_suffix(".deepspeed.json")),
                               json.dumps(deepspeed_zero3(offload), indent=2) + "\n")
        written.append(ds)
        ds_file = str(ds.resolve())
    cfg = accelerate_config(kind, gpus, nodes, offload=offload, deepspeed_file=ds_file)
    header = (f"# accelerate config written by `lima-align config accelerate --kind {kind} --gpus {gpus} "
              f"--nodes {nodes}{' --offload' if offload else ''}`\n"
              f"# accelerate launch --config_file {path.name} -m lima_align.cli train RECIPE\n")
    write_text_atomic(path, header + yaml.safe_dump(cfg, sort_keys=True))
    return [path] + written


# ----------------------------------------------------------------- memory


def full_finetune_gib(params_b: float, shards: int, *, hidden: int, layers: int, offload: bool = False,
                      tokens_per_gpu: int = 2048, checkpointing: bool = True) -> dict[str, float]:
    """Rough per-GPU memory (GiB) of full fine-tuning with fp32 master weights and AdamW, sharded `shards` ways.

    Per parameter: 4 bytes fp32 weights + 4 gradient + 8 AdamW moments = 16 bytes, divided by
    the shards (ZeRO-3 / FSDP full shard), plus the bf16 copy of the largest layer being
    gathered and the activations: with checkpointing one hidden state per layer per token
    (bf16), plus one layer's full activations (~34 x hidden bytes per token, Korthikanti et al.).
    """
    gib = 1024 ** 3
    states = 0.0 if offload else params_b * 1e9 * 16 / shards / gib
    gathered = 2 * 2 * params_b * 1e9 / max(layers, 1) / gib  # two layers' bf16 weights in flight (prefetch)
    per_token = (2 * hidden * layers if checkpointing else 34 * hidden * layers) + 34 * hidden
    activations = tokens_per_gpu * per_token / gib
    return {"states": round(states, 1), "gathered_layers": round(gathered, 1),
            "activations": round(activations, 1), "total": round(states + gathered + activations, 1)}


# name -> (billions of parameters, hidden size, decoder layers): LLaMA-1 (Touvron et al. 2023, Table 2),
# the shapes `config memory` assumes from a size alone, only when one is near it.
LLAMA_SHAPES = {"LLaMA-7B": (6.7, 4096, 32), "LLaMA-13B": (13.0, 5120, 40), "LLaMA-33B": (32.5, 6656, 60),
                "LLaMA-65B": (65.2, 8192, 80)}


@dataclass
class ModelShape:
    params_b: float
    hidden: int
    layers: int
    source: str  # where the numbers came from, printed with the estimate


def model_shape(*, params_b: float | None = None, hidden: int | None = None, layers: int | None = None,
                model: str | None = None) -> ModelShape:
    """The numbers the estimate needs: from a model's config (--model; parameters counted on the meta
    device, nothing loaded), from --hidden/--layers, or, given only a size, the nearest LLaMA's shape,
    which is refused when no LLaMA size is within a factor 1.5 (activations scale with the shape)."""
    import math

    for flag, v in (("--params-b", params_b), ("--hidden", hidden), ("--layers", layers)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise LimaError(f"must be a positive number, not {v}", where=flag, fix=f"e.g. {flag} 7")
    given = ("--hidden/--layers" if hidden and layers else "--hidden" if hidden else "--layers" if layers else "")
    if model:
        cfg = _model_config(model)
        text = getattr(cfg, "text_config", None) or cfg  # a multimodal config keeps the decoder's shape apart
        h = hidden or getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
        n = layers or getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
        if not (h and n):
            raise LimaError(f"{model}'s config names no hidden size or layer count", where="--model",
                            fix="give --hidden and --layers")
        p = params_b or _count_parameters(cfg) / 1e9
        return ModelShape(p, int(h), int(n), f"{model}'s config" + (f", {given} as given" if given else "")
                          + (", --params-b as given" if params_b else ""))
    if params_b is None:
        raise LimaError("the model's size is unknown", where="--params-b",
                        fix="give --model PATH (a model folder or hub id), or --params-b with --hidden and --layers")
    if hidden and layers:
        return ModelShape(params_b, hidden, layers, "--params-b, --hidden/--layers as given")
    name, (size, h, n) = min(LLAMA_SHAPES.items(), key=lambda kv: abs(math.log(kv[1][0] / params_b)))
    if max(size, params_b) / min(size, params_b) > 1.5:
        raise LimaError(f"no model shape known for {params_b:g}B parameters (the nearest, {name}, is {size:g}B), "
                        "and activations depend on the hidden size and depth", where="--params-b",
                        fix="give --model PATH (a model folder or hub id), or --hidden and --layers")
    return ModelShape(params_b, hidden or h, layers or n,
                      f"assumed {name}'s shape, the LLaMA size nearest {params_b:g}B"
                      + (f" ({given} as given)" if given else "") + "; --model PATH reads your model's")


def _model_config(model: str) -> Any:
    from transformers import AutoConfig

    from .models import resolve_model_path

    path = Path(model)
    try:
        if path.is_file():  # a config.json on its own
            return AutoConfig.for_model(**json.loads(path.read_text()))
        return AutoConfig.from_pretrained(resolve_model_path(model, prepare=False))
    except LimaError as e:  # resolve_model_path speaks of model.name; here the flag is --model
        raise LimaError([Problem("--model", x.what, x.fix) for x in e.problems]) from None
    except Exception as e:  # noqa: BLE001  (unreachable hub, unknown model type, broken JSON: all the user's to fix)
        raise LimaError(f"cannot read a model config from {model!r}: {str(e).splitlines()[0][:200]}", where="--model",
                        fix="give a model folder with config.json, a config.json file, or a reachable hub id") from None


def _count_parameters(cfg: Any) -> int:
    """Parameters of the model a config describes, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------- FSDP on CPU (tests)


def force_fsdp_on_cpu(accelerator: Any, *, ram_efficient_loading: bool = False) -> None:
    """Turn a multi-process CPU Accelerator into an FSDP2 one.

    accelerate only enables FSDP for GPU-like devices and silently falls back to DDP on CPU, but
    torch's FSDP2 (`fully_shard`) itself works over gloo. The test (tests/fsdp_worker.py) calls
    this right after the Accelerator is made, so the exact code path of a GPU FSDP run (sharded
    parameters, sharded state saving, full state dict gathered for the checkpoint) runs on CPU.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                            auto_wrap_policy="transformer_based_wrap",
                                            state_dict_type="SHARDED_STATE_DICT",
                                            cpu_ram_efficient_loading=ram_efficient_loading)
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    # AcceleratorState copies PartialState's fields each time it is instantiated again.
    PartialState().distributed_type = DistributedType.FSDP


def fresh_accelerator_state() -> None:
    """Forget the AcceleratorState an earlier train() left in this process.

    `dialogue train`, `ablate` and test sessions train several recipes in one process, and accelerate
    keeps one AcceleratorState per process: a second Accelerator asking for another precision (fp32
    after bf16) is refused with "AcceleratorState has already been initialized". With one process the
    state is ours to drop; under a launcher (several processes) it belongs to the launch and is kept."""
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


# ----------------------------------------------------------------- shipped files and the CLI

# name -> (kind, gpus, nodes, offload): the files in src/lima_align/configs/, regenerated by
# `write_shipped_configs` (tests/test_scale_configs.py checks they are current).
SHIPPED = {"ddp": ("ddp", 8, 1, False), "fsdp": ("fsdp", 8, 1, False), "fsdp-offload": ("fsdp", 8, 1, True),
           "zero3": ("zero3", 8, 1, False), "multinode-fsdp": ("fsdp", 8, 2, False)}


def write_shipped_configs(folder: Path = CONFIGS_DIR) -> list[Path]:
    out = []
    for name, (kind, gpus, nodes, offload) in SHIPPED.items():
        out += write_accelerate_config(folder / f"{name}.yaml", kind, gpus, nodes, offload=offload)
    # The shipped ZeRO-3 file names its JSON relative to the repository root (where users launch).
    z = folder / "zero3.yaml"
    z.write_text(z.read_text().replace(str((folder / "zero3.deepspeed.json").resolve()),
                                       "src/lima_align/configs/zero3.deepspeed.json"))
    return out


def cmd_config_accelerate(args: Any) -> int:
    written = write_accelerate_config(Path(args.output), args.kind, args.gpus, args.nodes, offload=args.offload)
    for p in written:
        print(f"wrote {p}")
    print(f"launch: accelerate launch --config_file {written[0]} -m lima_align.cli train RECIPE")
    if args.nodes > 1:
        print(f"on each of the {args.nodes} nodes, with its own --machine_rank 0..{args.nodes - 1} and "
              "main_process_ip set to node 0's address")
    return 0


def cmd_config_memory(args: Any) -> int:
    shards = args.gpus * args.nodes
    shape = model_shape(params_b=args.params_b, hidden=args.hidden, layers=args.layers, model=args.model)
    est = full_finetune_gib(shape.params_b, shards, offload=args.offload, tokens_per_gpu=args.tokens,
                            hidden=shape.hidden, layers=shape.layers, checkpointing=not args.no_checkpointing)
    print(f"model: {shape.params_b:.3g}B parameters, hidden size {shape.hidden}, {shape.layers} layers "
          f"({shape.source})")
    print(f"full fine-tune of {shape.params_b:.3g}B parameters sharded over {shards} GPUs "
          f"({args.tokens} tokens per forward pass):")
    for k, v in est.items():
        print(f"  {k:16} {v:8.1f} GiB per GPU")
    return 0


def add_config_commands(config_sub: Any) -> None:
    """`lima-align config accelerate` and `config memory`, under the existing `config` group."""
    a = config_sub.add_parser("accelerate", help="write an accelerate config (DDP, FSDP or DeepSpeed ZeRO-3)",
                              description="Write a config file for `accelerate launch --config_file FILE -m "
                              "lima_align.cli train RECIPE`; zero3 also writes the DeepSpeed JSON beside it.")
    a.add_argument("--kind", required=True, choices=list(KINDS))
    a.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    a.add_argument("--nodes", type=int, default=1, help="machines")
    a.add_argument("--offload", action="store_true", help="keep parameters and optimizer state in CPU memory")
    a.add_argument("--output", default="accelerate.yaml", help="file to write")
    a.set_defaults(func=cmd_config_accelerate)
    m = config_sub.add_parser("memory", help="estimate per-GPU memory of a sharded full fine-tune")
    m.add_argument("--model", help="a model folder, its config.json, or a hub id: size and shape from its config")
    m.add_argument("--params-b", type=float, help="model size in billions of parameters (default: counted from "
                   "--model)")
    m.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    m.add_argument("--nodes", type=int, default=1)
    m.add_argument("--tokens", type=int, default=2048, help="tokens per forward pass per GPU")
    m.add_argument("--hidden", type=int, help="hidden size (default: --model's, else the LLaMA size nearest "
                   "--params-b: 4096 for 7B ... 8192 for 65B)")
    m.add_argument("--layers", type=int, help="decoder layers (default: as --hidden; LLaMA 7B: 32 ... 65B: 80)")
    m.add_argument("--offload", action="store_true")
    m.add_argument("--no-checkpointing", action="store_true")
    m.set_defaults(func=cmd_config_memory)


# ----------------------------------------------------------------- speed options of train


def check_speed_options(t: Any) -> None:
    """Fail before any model is loaded when the machine cannot do what the recipe's train section asks."""
    import importlib.util

    import torch

    if t.attn_implementation == "flash_attention_2":
        if not torch.cuda.is_available():
            raise LimaError("flash_attention_2 needs a CUDA GPU and there is none", where="train.attn_implementation",
                            fix="use 'sdpa' (or 'auto') on this machine")
        if importlib.util.find_spec("flash_attn") is None:
            raise LimaError("flash_attention_2 needs the flash-attn package, which is not installed",
                            where="train.attn_implementation",
                            fix="pip install flash-attn --no-build-isolation, or use 'sdpa'")
    if t.compile and importlib.util.find_spec("triton") is None and torch.cuda.is_available():
        raise LimaError("torch.compile on GPU needs triton, which is not installed", where="train.compile",
                        fix="pip install triton (it comes with CUDA builds of torch), or set train.compile=false")
    if t.quantization == "4bit":
        if t.method != "lora":
            raise LimaError("a 4-bit base cannot be fully fine-tuned", where="train.quantization",
                            fix="set train.method=lora (QLoRA), or train.quantization=none")
        if not torch.cuda.is_available():
            raise LimaError("4-bit (bitsandbytes) training needs a CUDA GPU and there is none",
                            where="train.quantization", fix="set train.quantization=none (plain LoRA) on this machine")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise LimaError("4-bit training needs bitsandbytes, which is not installed", where="train.quantization",
                            fix="pip install bitsandbytes")


def load_quantized(model_cfg: Any, gradient_checkpointing: bool) -> Any:
    """The base model in 4-bit NF4 with bf16 compute (QLoRA), ready for LoRA adapters."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from .models import LoadedModel, load_tokenizer, resolve_model_path

    path = resolve_model_path(model_cfg.name, model_cfg.cache_dir)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=q, revision=model_cfg.revision,
                                                 dtype=torch.bfloat16, device_map={"": torch.cuda.current_device()})
    # Norms and the output layer in fp32, input grads on: what LoRA on a frozen 4-bit base needs.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    return LoadedModel(model, load_tokenizer(path, model_cfg.revision), path)


def apply_speed_options(model: Any, attn_implementation: str, compile_: bool) -> None:
    """Choose the attention kernel and compile each decoder layer in place.

    Layers are compiled one by one (not the whole model) so FSDP's per-layer hooks, peft's
    wrappers and the residual-dropout hooks stay outside the compiled graphs, and `dynamic=True`
    because every packed row has its own length.
    """
    if attn_implementation != "auto":
        model.set_attn_implementation(attn_implementation)
    if compile_:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        dec = base.get_decoder()
        layers = getattr(dec, "layers", None) or getattr(dec, "h", None)  # Llama/Gemma/Qwen..., GPT-2 style
        if layers is None:
            raise LimaError(f"train.compile: no decoder layer list found in {type(dec).__name__}",
                            where="train.compile", fix="set train.compile=false for this model")
        for layer in layers:
            layer.compile(dynamic=True)
