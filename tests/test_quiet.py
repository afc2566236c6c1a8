"""quiet.silence_library_noise drops exactly two library messages: transformers' FutureWarning about
`is_gradient_checkpointing` (raised when peft wraps a model) and accelerate's "Removed shared tensor" notice
(raised when a state with tied weights is saved); everything else still gets through."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from lima_align.quiet import SHARED_TENSOR_LOGGER, silence_library_noise


@pytest.fixture
def accelerate_logger():
    """The logger without our filter (an earlier silence_library_noise in this process may have added it), and
    as it was afterwards: the filter is process-wide, unlike the warning filters pytest restores per test."""
    logger = logging.getLogger(SHARED_TENSOR_LOGGER)
    before = list(logger.filters)
    logger.filters[:] = [f for f in before if type(f).__module__ != "lima_align.quiet"]
    yield logger
    logger.filters[:] = before


def wrap_in_lora(tiny_gemma):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_gemma))
    return get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))


def gradient_checkpointing_warnings(caught):
    return [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_peft_wrapping_warns_until_silenced(tiny_gemma, accelerate_logger):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrap_in_lora(tiny_gemma)
    assert gradient_checkpointing_warnings(caught)  # the noise is real with these library versions
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_library_noise()
        wrap_in_lora(tiny_gemma)
        warnings.warn("something else", FutureWarning)
    assert not gradient_checkpointing_warnings(caught)
    assert [str(w.message) for w in caught if w.category is FutureWarning] == ["something else"]


def test_shared_tensor_notice_is_dropped_other_lines_are_not(caplog, accelerate_logger):
    from accelerate import PartialState
    from accelerate.utils import clean_state_dict_for_safetensors

    PartialState(cpu=True)  # accelerate's logger asks for its state (train() has one by the time it saves)
    logger, kept = accelerate_logger, len(accelerate_logger.filters)
    tied = torch.zeros(2, 2)
    with caplog.at_level(logging.WARNING):
        clean_state_dict_for_safetensors({"embed.weight": tied, "lm_head.weight": tied})
    assert any("Removed shared tensor" in r.getMessage() for r in caplog.records)  # the noise is real
    caplog.clear()
    silence_library_noise()
    silence_library_noise()  # idempotent
    assert len(logger.filters) == kept + 1
    with caplog.at_level(logging.WARNING):
        clean_state_dict_for_safetensors({"embed.weight": tied, "lm_head.weight": tied})
        logger.warning("[RANK 1] Removed shared tensor {'x'} while saving.")
        logger.warning("another accelerate warning")
    assert [r.getMessage() for r in caplog.records] == ["another accelerate warning"]


def test_loading_a_lora_checkpoint_is_quiet(tiny_gemma, tmp_path, accelerate_logger):
    from lima_align.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this wrapping warns too; the load below is what is checked
        wrap_in_lora(tiny_gemma).save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm = load_model(str(tmp_path / "adapter"))
    assert lm.adapter == str(tmp_path / "adapter")
    assert not gradient_checkpointing_warnings(caught)
