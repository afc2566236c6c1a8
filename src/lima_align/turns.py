"""How a conversation becomes tokens, which tokens carry loss, and where generation stops.

LIMA ends every utterance with a special end-of-turn (EOT) token and stops generating at it.
Two formats:

* `plain` (for base models, which have no chat template), documented and stable:

      <bos>User:
      {user text}<EOT>
      Assistant:
      {assistant text}<EOT>
      User:
      ...

  An optional system text comes first as `System:\n{text}<EOT>\n`. Each piece (role header,
  content, EOT) is tokenised on its own and the ids are concatenated, so the tokens the model
  is trained on and the tokens it sees at generation time are identical (joining strings first
  lets a tokenizer merge across the boundary differently in the two cases).

* `template`: the tokenizer's own chat template; the loss mask is found by rendering growing
  prefixes of the conversation, and we refuse templates where a prefix does not render as a
  prefix (the mask would be wrong).

In both, a message's text is only text: special-token text typed in it ("hi <eos> there") is
tokenised as its characters, never as the token, so no message can end a turn early or forge
another role's turn. Only the format itself writes special tokens.

Which EOT? A token's embedding row only learns if it is trained. With full fine-tuning we use
the model's own end-of-turn token if it has one (Gemma's `<end_of_turn>`), else a new one;
LoRA freezes embeddings, so `auto` falls back to EOS there (the pretrained EOS row, unchanged:
the adapters learn when to emit it), and an explicit non-EOS EOT under LoRA has its embedding
row made trainable (peft `trainable_token_indices`). `describe()` says which was chosen and
what training does to it; for a loaded checkpoint it reads how the checkpoint was trained
(`checkpoint_method`), so `chat` never claims a LoRA run trained its EOS.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .checkpoint import trained_method
from .config import TrainConfig, TurnsConfig
from .errors import LimaError
from .records import Conversation, Message

IGNORE = -100
KNOWN_EOT_TOKENS = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|eot|>")
NEW_EOT = "<|eot|>"
LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
SEG_CACHE_SIZE = 4096  # tokenised texts kept per format


def checkpoint_method(tokenizer: Any) -> str | None:
    """'full', 'frozen' or 'lora' when the tokenizer was loaded from a lima-align run checkpoint (which records
    how it was trained), else None."""
    where = str(getattr(tokenizer, "name_or_path", "") or "")
    return trained_method(where) if where else None


def training_method(t: TrainConfig) -> str:
    """How a run trains, as far as the end of turn cares: 'lora', 'frozen' (full fine-tuning that keeps
    the embedding matrix as pretrained, train.freeze_embeddings) or 'full'."""
    if t.method == "lora":
        return "lora"
    return "frozen" if t.freeze_embeddings else "full"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss

    @property
    def n_trained(self) -> int:
        # labels[0] is never a target: nothing comes before the first token to predict it.
        return sum(1 for t in self.labels[1:] if t != IGNORE)


class TurnFormat:
    def __init__(self, tokenizer: Any, cfg: TurnsConfig, *, method: str | None = None, for_training: bool = True):
        """method: how the model is trained ('full' when not given), or for a loaded model (for_training=False)
        how it was trained: not given, it is read from the checkpoint the tokenizer came from, if any."""
        if method is None:
            method = "full" if for_training else checkpoint_method(tokenizer)
        self.method = method
        self.tok = tokenizer
        self.system = cfg.system
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.kind = cfg.format if cfg.format != "auto" else ("template" if has_template else "plain")
        if self.kind == "template" and not has_template:
            raise LimaError("turns.format is 'template' but this tokenizer has no chat template",
                            where="turns.format", fix="use turns.format=plain")
        self.new_token: str | None = None  # a token we add to the vocabulary (caller resizes embeddings)
        self.train_eot_row = False  # LoRA: make the EOT embedding row trainable
        if self.kind == "plain":
            self.eot_id, self.reason = self._choose_eot(cfg.eot, method, for_training)
        else:
            self.eot_id = self._template_eot()
            self.reason = "the chat template's own end-of-turn token" + (
                "; LoRA leaves its embedding row as pretrained" if method == "lora" else "")
        self.stop_ids = sorted({self.eot_id} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
        self._seg_cache: OrderedDict[str, list[int]] = OrderedDict()
        # The texts the tokenizer would read as special tokens, longest first (one may contain another).
        added = (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
        special = set(tokenizer.all_special_tokens) | {a.content for a in added if getattr(a, "special", False)}
        self._special_re = re.compile("|".join(re.escape(t) for t in sorted(special, key=len, reverse=True) if t))

    # ------------------------------------------------------------ EOT choice

    def _choose_eot(self, eot: str, method: str | None, for_training: bool) -> tuple[int, str]:
        tok = self.tok
        vocab = tok.get_vocab()
        if eot == "eos" or (eot == "auto" and method in ("lora", "frozen")):
            reason = _eos_reason(method, for_training)
            if for_training:
                reason += " (turns.eot=eos)" if eot == "eos" else " (set turns.eot to a token to train a dedicated row)"
            return tok.eos_token_id, reason
        if eot == "auto":
            for name in KNOWN_EOT_TOKENS:
                if name in vocab:
                    return vocab[name], f"{name!r}, the model's own end-of-turn token{_row_trained(method)}"
            eot = "new"
        if eot == "new":
            eot = NEW_EOT
        if eot == tok.eos_token and not for_training:  # a checkpoint that ended turns with EOS records it by name
            return tok.eos_token_id, _eos_reason(method, for_training)
        if eot not in vocab:
            if not for_training:
                raise LimaError(f"end-of-turn token {eot!r} is not in this tokenizer", where="turns.eot",
                                fix="generate with the tokenizer saved in the run's checkpoint")
            tok.add_special_tokens({"additional_special_tokens": [eot]})
            self.new_token = eot
        tid = tok.convert_tokens_to_ids(eot)
        ids = tok(eot, add_special_tokens=False)["input_ids"]
        if ids != [tid]:
            raise LimaError(f"end-of-turn {eot!r} is not a single token in this tokenizer (got {ids})",
                            where="turns.eot", fix="use a special token, 'new', or 'eos'")
        if not for_training:  # without a checkpoint record (method None) the token came from turns.eot
            return tid, (f"{eot!r}, the checkpoint's end-of-turn token{_row_trained(method)}" if method
                         else f"{eot!r}, as turns.eot names it")
        if method == "lora":
            self.train_eot_row = True
        how = "a new token added to the vocabulary" if self.new_token else "an existing token"
        return tid, f"{eot!r}, {how}{_row_trained(method)}"

    def _template_eot(self) -> int:
        sentinel = "LIMASENTINEL"
        ids = self.tok.apply_chat_template([{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": sentinel}], tokenize=True)
        ids = _as_ids(ids)
        sent = self.tok(sentinel, add_special_tokens=False)["input_ids"]
        special = set(self.tok.all_special_ids) | set(getattr(self.tok, "added_tokens_decoder", {}) or {})
        for i in range(len(ids) - len(sent), -1, -1):
            if ids[i:i + len(sent)] == sent:
                for t in ids[i + len(sent):]:
                    if t in special:
                        return t
                break
        return self.tok.eos_token_id

    def describe(self) -> str:
        name = self.tok.convert_ids_to_tokens(self.eot_id)
        return f"turn format {self.kind!r}; end of turn = {name!r} (id {self.eot_id}): {self.reason}"

    # ------------------------------------------------------------ encoding

    def _seg(self, text: str) -> list[int]:
        # Headers repeat in every example; message texts mostly do not, so the cache keeps the most
        # recently used texts only (a server tokenising every request's text would grow it forever).
        ids = self._seg_cache.get(text)
        if ids is None:
            ids = self._seg_cache[text] = self._text_ids(text)
            if len(self._seg_cache) > SEG_CACHE_SIZE:
                self._seg_cache.popitem(last=False)
        else:
            self._seg_cache.move_to_end(text)
        return ids

    def _text_ids(self, text: str) -> list[int]:
        """Ids of text with any special-token text in it spelled out as characters."""
        return self.tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _template_ids(self, dicts: list[dict], add_generation_prompt: bool = False) -> list[int]:
        """The chat template's ids, with special-token text inside a message's content tokenised as text.

        Each such occurrence is swapped for a marker before rendering, and the rendered text is tokenised
        between markers as the template would tokenise it (its own tokens stay special), each marked piece
        as text. Without special-token text in any message this is exactly the template's tokenisation.
        """
        found: list[str] = []
        nonce = uuid.uuid4().hex

        def mark(m: re.Match) -> str:
            found.append(m.group(0))
            return f"\x00{nonce}:{len(found) - 1}\x00"

        marked = [{**d, "content": self._special_re.sub(mark, d["content"])} if isinstance(d.get("content"), str)
                  and self._special_re.pattern else d for d in dicts]
        if not found:
            return _as_ids(self.tok.apply_chat_template(dicts, tokenize=True,
                                                        add_generation_prompt=add_generation_prompt))
        text = self.tok.apply_chat_template(marked, tokenize=False, add_generation_prompt=add_generation_prompt)
        parts = re.split(f"\x00{nonce}:(\\d+)\x00", text)
        if {int(k) for k in parts[1::2]} != set(range(len(found))):
            raise LimaError("this chat template changes the text of a message that contains special-token text, so "
                            "that text cannot be kept apart from the template's own tokens", where="turns.format",
                            fix="use turns.format=plain, or remove the special-token text from the message")
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids += self._text_ids(found[int(part)])
            elif part:
                ids += self.tok(part, add_special_tokens=False)["input_ids"]
        return ids

    def _header(self, role: str, first: bool) -> list[int]:
        return self._seg(("" if first else "\n") + LABELS[role] + ":\n")

    def _bos(self) -> list[int]:
        # Start the way the tokenizer itself starts a text (Gemma and Llama add BOS, others don't).
        if not hasattr(self, "_bos_ids"):
            bos = self.tok.bos_token_id
            first = self.tok("x", add_special_tokens=True)["input_ids"][:1]
            self._bos_ids = [bos] if bos is not None and first == [bos] else []
        return list(self._bos_ids)

    def _with_system(self, messages: list[Message]) -> list[Message]:
        if self.system and not (messages and messages[0].role == "system"):
            return [Message("system", self.system)] + list(messages)
        return list(messages)

    def encode(self, conv: Conversation | list[Message], loss_on: str = "assistant") -> Encoded:
        """Token ids and labels for a training example (labels = ids where trained, else IGNORE)."""
        messages = self._with_system(conv.messages if isinstance(conv, Conversation) else conv)
        if self.kind == "template":
            return self._encode_template(messages, loss_on)
        last_asst = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        ids = self._bos()
        labels = [IGNORE] * len(ids) if loss_on != "all" else list(ids)
        for i, m in enumerate(messages):
            head = self._header(m.role, i == 0)
            body = self._seg(m.content) + [self.eot_id]
            trained = (loss_on == "all" or (m.role == "assistant" and (loss_on == "assistant" or i == last_asst)))
            ids += head + body
            labels += (head if loss_on == "all" else [IGNORE] * len(head)) + (body if trained else [IGNORE] * len(body))
        return Encoded(ids, labels)

    def encode_prompt(self, messages: list[Message]) -> list[int]:
        """Ids of a conversation that ends in a user turn, followed by the assistant header."""
        messages = self._with_system(messages)
        if self.kind == "template":
            return self._template_ids([m.to_dict() for m in messages], add_generation_prompt=True)
        ids = self._bos()
        for i, m in enumerate(messages):
            ids += self._header(m.role, i == 0) + self._seg(m.content) + [self.eot_id]
        return ids + self._header("assistant", not messages)

    def _encode_template(self, messages: list[Message], loss_on: str) -> Encoded:
        dicts = [m.to_dict() for m in messages]
        full = self._template_ids(dicts)
        labels = list(full) if loss_on == "all" else [IGNORE] * len(full)
        last_asst = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        for i, m in enumerate(messages):
            if m.role != "assistant" or loss_on == "all" or (loss_on == "last_assistant" and i != last_asst):
                continue
            start = self._template_ids(dicts[:i], add_generation_prompt=True)
            end = self._template_ids(dicts[:i + 1])
            if full[:len(start)] != start or full[:len(end)] != end:
                raise LimaError("this chat template does not render a conversation's prefix as a prefix, so the "
                                "assistant tokens cannot be found reliably", where="turns.format",
                                fix="use turns.format=plain")
            labels[len(start):len(end)] = full[len(start):len(end)]
        return Encoded(full, labels)

    def show_mask(self, conv: Conversation, loss_on: str = "assistant") -> str:
        """Render an example with trained tokens in [[...]] and masked ones plain."""
        return self.render_mask(self.encode(conv, loss_on))

    def render_mask(self, enc: Encoded) -> str:
        """Render encoded tokens (e.g. trimmed as training trims them) with trained ones in [[...]]."""
        out, run, state = [], [], None
        for t, lab in zip(enc.input_ids, enc.labels):
            trained = lab != IGNORE
            if state is not None and trained != state:
                out.append(self._render(run, state))
                run = []
            state = trained
            run.append(t)
        if run:
            out.append(self._render(run, bool(state)))
        return "".join(out)

    def _render(self, ids: list[int], trained: bool) -> str:
        text = self.tok.decode(ids, skip_special_tokens=False)
        return f"[[{text}]]" if trained else text


def _eos_reason(method: str | None, for_training: bool) -> str:
    """What EOS as the end of turn is, and what training does (or did) to it."""
    if method == "lora" and for_training:
        return ("EOS, the model's own pretrained end-of-sequence token, not a new one: LoRA freezes embeddings, so "
                "its row stays as pretrained and the adapters learn when to emit it")
    if method == "lora":  # an explicit turns.eot naming EOS would also have trained its row: say only what is sure
        return ("EOS, the model's own pretrained end-of-sequence token, not a new one: the LoRA adapters learned "
                "when to emit it")
    if method == "full":
        return "EOS, the model's own end-of-sequence token, its row trained further by full fine-tuning"
    if method == "frozen":
        return ("EOS, the model's own pretrained end-of-sequence token, not a new one: the embedding matrix stays "
                "as pretrained (train.freeze_embeddings) and the fine-tuned layers learn when to emit it")
    return "EOS, the model's own end-of-sequence token"


def _row_trained(method: str | None) -> str:
    """', <how its embedding row is trained>' for a dedicated end-of-turn token ('' when unknown)."""
    if method == "lora":
        return ", its embedding row trained alongside the LoRA adapters"
    return ", trained by full fine-tuning" if method == "full" else ""


def _as_ids(x: Any) -> list[int]:
    if isinstance(x, dict) or hasattr(x, "keys"):
        x = x["input_ids"]
    if x and isinstance(x[0], list):
        x = x[0]
    return list(x)
