"""Silence two library messages that reach users on every LoRA run and mean nothing to them.

* transformers' FutureWarning "`is_gradient_checkpointing` is deprecated ...": peft reads that property
  (`getattr(model, "is_gradient_checkpointing", True)` in PeftModel.__init__) whenever it wraps a model, so
  every `get_peft_model` (training) and `PeftModel.from_pretrained` (loading a LoRA checkpoint) warns.
  Nothing of ours uses the property; peft will move to the new name.
* accelerate's "Removed shared tensor {...} while saving ..." (accelerate.utils.other.
  clean_state_dict_for_safetensors, from `Accelerator.save_state`): Gemma ties its output layer to the
  embeddings, so the tied copy is dropped from every saved training state, as it should be; the lines name
  peft's wrapped weights (`base_model.model.lm_head.weight`), which makes them look like a peft problem.

Only these two messages are filtered (by their text); every other warning and log line is untouched.
"""

from __future__ import annotations

import logging
import re
import warnings

GRADIENT_CHECKPOINTING_WARNING = r"`is_gradient_checkpointing` is deprecated"
SHARED_TENSOR_LOGGER = "accelerate.utils.other"
# accelerate's logger adapter puts "[RANK n] " in front of the message in a multi-process run
SHARED_TENSOR_NOTICE = re.compile(r"^(\[RANK \d+\] )?Removed shared tensor ")


class _DropSharedTensorNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not SHARED_TENSOR_NOTICE.match(str(record.msg))


def silence_library_noise() -> None:
    """Install both filters (idempotent: calling it again adds nothing)."""
    warnings.filterwarnings("ignore", message=GRADIENT_CHECKPOINTING_WARNING, category=FutureWarning)
    logger = logging.getLogger(SHARED_TENSOR_LOGGER)
    if not any(isinstance(f, _DropSharedTensorNotice) for f in logger.filters):
        logger.addFilter(_DropSharedTensorNotice())
