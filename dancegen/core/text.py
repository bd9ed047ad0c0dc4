"""CLIP text conditioning for SD-1.5-layout models: a CLIP BPE tokenizer built from a word list, and a prompt encoder.

The tokenizer follows CLIP's byte-level BPE conventions (Radford et al. 2021, openai/CLIP ``simple_tokenizer.py``:
the ``bytes_to_unicode`` alphabet, ``</w>`` marking a word's last symbol, the word-splitting pattern, merges.txt with
a ``#version`` header). The encoder follows SD-1.5's text conditioning as diffusers' ``StableDiffusionPipeline
.encode_prompt`` does it: pad to 77 tokens, truncate, use the last hidden state (or, with ``clip_skip``, an earlier
layer through the final layer norm), and encode ``""`` as the unconditional prompt.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dancegen.errors import MissingWeightsError

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"
# CLIP's word-splitting pattern (simple_tokenizer.py; transformers' CLIPTokenizer uses the same one). Letters group
# into words, every digit is its own word, runs of other symbols form words, and English clitics split off.
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


# ------------------------------------------------------------------------------------------------------ tokenizer
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Bytes that are printable, non-space Latin-1 characters map to themselves; the other 68 (controls, space,
    soft hyphen, ...) map to ``chr(256 + n)`` in byte order, so BPE never sees whitespace or control characters.

    Returns:
        byte value -> one-character string, in CLIP's vocabulary order (the printable bytes first, then the rest).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


_BYTE_CHAR = bytes_to_unicode()


def _clip_pretokenize(text: str) -> list[str]:
    """Normalise ``text`` as CLIPTokenizer does (NFC, collapsed whitespace, lower case) and split it into CLIP words.

    Uses the ``tokenizers`` library's regex engine (the one the real tokenizer runs), so a word list is validated
    with exactly the splitting that tokenization will apply.

    Returns:
        The words, each as its UTF-8 bytes spelt in the ``bytes_to_unicode`` alphabet.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers

    norm = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    split = pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True)
    words = [w for w, _ in split.pre_tokenize_str(norm.normalize_str(text))]
    return ["".join(_BYTE_CHAR[b] for b in w.encode("utf-8")) for w in words]


def _word_symbols(word: str) -> list[str]:
    """A byte-level word as its BPE start symbols: one per character, the last one carrying ``</w>``."""
    return [*word[:-1], word[-1] + END_OF_WORD]


def bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to a word: repeatedly merge every occurrence of the lowest-ranked adjacent pair.

    Args:
        symbols: the word's start symbols (``_word_symbols``).
        ranks: merge pair -> rank (its line index in merges.txt; lower merges first).

    Returns:
        The word's tokens.
    """
    parts = list(symbols)
    while len(parts) > 1:
        present = [(ranks[p], p) for p in zip(parts, parts[1:], strict=False) if p in ranks]
        if not present:
            break
        pair = min(present)[1]
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def clip_bpe_from_words(words) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a CLIP BPE in which every listed word is one token.

    The words are normalised (NFC, lower case), deduplicated and sorted, so the result depends only on the set of
    words. Each word adds merges one at a time: run BPE with the merges so far and, while the word is still in
    several pieces, append the merge of its first two pieces. A new merge ranks after all earlier ones, so it can
    only fire once no earlier merge applies; words that were already one token stay one token.

    Args:
        words: iterable of words; each must be a single CLIP word (letters only, one digit, or a run of symbols).

    Returns:
        ``(vocab, merges)``. The vocabulary is laid out as CLIP's: the 256 byte symbols (ids 0-255), their ``</w>``
        forms (256-511), one token per merge in merge order (duplicates, which this construction does not produce
        for letter words, are kept once), then ``<|startoftext|>`` and ``<|endoftext|>`` (the last two ids). Its
        size is ``512 + len(merges) + 2``.

    Raises:
        ValueError: a word is empty, a special token, or splits into several CLIP words (e.g. "t-shirt", "42").
    """
    clean: set[str] = set()
    for w in words:
        pieces = _clip_pretokenize(str(w))
        if len(pieces) != 1 or str(w).strip() in (SOT, EOT):
            raise ValueError(f"{w!r} is not one CLIP word (it splits into {len(pieces)} under CLIP's pattern); "
                             f"list its parts separately")
        clean.add(pieces[0])
    ranks: dict[tuple[str, str], int] = {}
    merges: list[tuple[str, str]] = []
    for word in sorted(clean):
        parts = bpe(_word_symbols(word), ranks)
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            parts = bpe(_word_symbols(word), ranks)
    alphabet = list(_BYTE_CHAR.values())
    tokens = alphabet + [c + END_OF_WORD for c in alphabet]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    tokens += [SOT, EOT]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer(folder: str | os.PathLike, words, model_max_length: int = 77):
    """Write a CLIP BPE tokenizer whose listed words are single tokens, in SD-1.5's ``tokenizer/`` layout.

    The folder gets the four files of a real SD-1.5 ``tokenizer/`` folder: ``vocab.json``, ``merges.txt``,
    ``tokenizer_config.json`` and ``special_tokens_map.json`` (what transformers 4's ``CLIPTokenizer
    .save_pretrained`` wrote; transformers 5 writes ``tokenizer.json`` instead, and loads either). Any other text
    still tokenizes: unknown words split into byte-level pieces, so no text maps to the unknown token. Files are
    JSON with sorted keys and no timestamps, so the same set of words writes byte-identical files.

    Args:
        folder: where to write (created if needed).
        words: the words to make single tokens (see ``clip_bpe_from_words``).
        model_max_length: the context length, 77 for SD-1.5's CLIP.

    Returns:
        The tokenizer loaded back from ``folder`` (``CLIPTokenizer.from_pretrained``).

    Raises:
        ValueError: a word is not a single CLIP word.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_from_words(words)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, obj: Any) -> None:
        (folder / name).write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                   encoding="utf-8")

    dump("vocab.json", vocab)
    (folder / "merges.txt").write_text("\n".join([MERGES_HEADER, *(f"{a} {b}" for a, b in merges)]) + "\n",
                                       encoding="utf-8")
    specials = {"bos_token": SOT, "eos_token": EOT, "pad_token": EOT, "unk_token": EOT}
    dump("special_tokens_map.json", specials)
    dump("tokenizer_config.json", {**specials, "add_prefix_space": False, "do_lower_case": True, "errors": "replace",
                                   "model_max_length": int(model_max_length), "tokenizer_class": "CLIPTokenizer"})
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


# ------------------------------------------------------------------------------------------------- prompt encoder
@dataclass
class PromptEmbeddings:
    """Text conditioning for one denoising call.

    Attributes:
        cond: ``(B, L, D)`` prompt embeddings, ``B = len(prompts) * num_per_prompt``, L the context length (77).
        uncond: ``(B, L, D)`` negative-prompt embeddings (``""`` when none given), or None without guidance.
        truncated: the prompts (and negative prompts) longer than the context, which lost their tail.
    """

    cond: Any
    uncond: Any = None
    truncated: list[str] = field(default_factory=list)

    def guidance_batch(self) -> Any:
        """``(2B, L, D)``: ``[uncond; cond]``, the order diffusers pipelines use for classifier-free guidance
        (``cond`` alone, ``(B, L, D)``, when there is no ``uncond``)."""
        import torch

        return self.cond if self.uncond is None else torch.cat([self.uncond, self.cond])


class PromptEncoder:
    """SD-1.5-style prompt encoding with a per-string cache.

    Each distinct string is encoded once per ``clip_skip`` (and device/dtype of the encoder); repeated prompts in a
    batch, across frames or across calls reuse the cached ``(1, L, D)`` embedding until ``clear_cache()``.

    Args:
        text_encoder: a transformers ``CLIPTextModel`` or ``CLIPTextModelWithProjection``; its device and dtype are
            the embeddings' device and dtype.
        tokenizer: the matching ``CLIPTokenizer``.
    """

    def __init__(self, text_encoder: Any, tokenizer: Any):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self._cache: dict[tuple, tuple[Any, bool]] = {}

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, dtype: Any = None, device: Any = None) -> PromptEncoder:
        """Load ``text_encoder/`` and ``tokenizer/`` of an SD-1.5-layout folder (local files only).

        Args:
            folder: the model folder (the one holding ``unet/``, ``vae/``, ...).
            dtype: torch dtype for the text encoder (None: as stored).
            device: device for the text encoder (None: CPU).

        Raises:
            MissingWeightsError: the folder, its ``text_encoder/`` or its ``tokenizer/`` is missing.
        """
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise MissingWeightsError("SD-1.5-layout model folder does not exist", path=folder)
        missing = []
        if not (folder / "text_encoder" / "config.json").is_file():
            missing.append("text_encoder/ (config.json + weights)")
        tok = folder / "tokenizer"
        if not ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()) and not (
                tok / "tokenizer.json").is_file():
            missing.append("tokenizer/ (vocab.json + merges.txt, or tokenizer.json)")
        if missing:
            raise MissingWeightsError(f"text conditioning needs {' and '.join(missing)}, which this SD-1.5-layout "
                                      f"folder lacks (an image-conditioned model has no text encoder)", path=folder)
        arch = json.loads((folder / "text_encoder" / "config.json").read_text()).get("architectures") or []
        model_cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in arch else CLIPTextModel
        kw = {"dtype": dtype} if dtype is not None else {}
        text_encoder = model_cls.from_pretrained(folder / "text_encoder", local_files_only=True, **kw)
        text_encoder.eval().requires_grad_(False)
        if device is not None:
            text_encoder.to(device)
        return cls(text_encoder, CLIPTokenizer.from_pretrained(tok, local_files_only=True))

    @property
    def max_length(self) -> int:
        """The context length L: the tokenizer's ``model_max_length``, at most the encoder's position count."""
        return int(min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings))

    def clear_cache(self) -> None:
        """Forget all cached embeddings (e.g. after changing the text encoder's weights)."""
        self._cache.clear()

    def encode(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_per_prompt: int = 1,
        guidance: bool = True,
        clip_skip: int | None = None,
    ) -> PromptEmbeddings:
        """Encode prompts (and negative prompts for classifier-free guidance).

        Args:
            prompt: one prompt or a list of P prompts.
            negative_prompt: None (``""``, SD's unconditional prompt), one string for all prompts, or P strings.
                Ignored without guidance.
            num_per_prompt: samples per prompt; each prompt's embedding is repeated this many times, consecutively
                (p0, p0, p1, p1, ...), as diffusers' ``num_images_per_prompt``.
            guidance: also encode the negative prompts (``uncond``).
            clip_skip: None uses the last layer's output; k >= 0 uses the output of the k-th layer from the end
                (``hidden_states[-1 - k]``) passed through the final layer norm (k = 0 equals None).

        Returns:
            ``PromptEmbeddings`` with ``cond`` / ``uncond`` of shape ``(P * num_per_prompt, L, D)`` in the text
            encoder's dtype and device.

        Raises:
            ValueError: empty prompt list, ``num_per_prompt < 1``, a negative-prompt list of the wrong length, or
                ``clip_skip`` outside ``[0, num_hidden_layers)``.
        """
        import torch

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt: expected a string or a non-empty list of strings")
        if num_per_prompt < 1:
            raise ValueError(f"num_per_prompt must be >= 1, got {num_per_prompt}")
        layers = int(self.text_encoder.config.num_hidden_layers)
        if clip_skip is not None and not 0 <= clip_skip < layers:
            raise ValueError(f"clip_skip must be in [0, {layers}) for a {layers}-layer text encoder, got {clip_skip}")
        negatives: list[str] = []
        if guidance:
            if negative_prompt is None or isinstance(negative_prompt, str):
                negatives = [negative_prompt or ""] * len(prompts)
            else:
                negatives = list(negative_prompt)
                if len(negatives) != len(prompts):
                    raise ValueError(f"negative_prompt has {len(negatives)} entries for {len(prompts)} prompts")
        for text in prompts + negatives:
            if not isinstance(text, str):
                raise ValueError(f"prompts must be strings, got {type(text).__name__}")

        param = next(self.text_encoder.parameters())
        key_of = {t: (t, clip_skip, str(param.device), param.dtype) for t in prompts + negatives}
        todo = list(dict.fromkeys(t for t in prompts + negatives if key_of[t] not in self._cache))
        if todo:
            self._encode_into_cache(todo, [key_of[t] for t in todo], clip_skip, param.device)

        def stack(texts: list[str]) -> torch.Tensor:
            emb = torch.cat([self._cache[key_of[t]][0] for t in texts])
            return emb.repeat_interleave(num_per_prompt, dim=0) if num_per_prompt > 1 else emb

        truncated = list(dict.fromkeys(t for t in prompts + negatives if self._cache[key_of[t]][1]))
        return PromptEmbeddings(cond=stack(prompts), uncond=stack(negatives) if guidance else None,
                                truncated=truncated)

    def _encode_into_cache(self, texts: list[str], keys: list[tuple], clip_skip: int | None, device: Any) -> None:
        """One text-encoder forward over ``texts`` (distinct strings); stores ``(embedding, truncated)`` per key."""
        import torch

        length = self.max_length
        ids = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                             return_tensors="pt").input_ids
        # Untruncated lengths tell which prompts lost tokens; verbose=False silences the over-length warning.
        full = self.tokenizer(texts, truncation=False, verbose=False).input_ids
        with torch.no_grad():
            if clip_skip is None:
                hidden = self.text_encoder(ids.to(device)).last_hidden_state
            else:
                # diffusers' clip_skip: an earlier layer's output, normalised as the last layer's output is.
                # transformers 5's CLIPTextModel holds final_layer_norm itself (no ``text_model`` wrapper, which
                # diffusers 0.42's encode_prompt still expects: huggingface/diffusers#14124); the projection
                # variant keeps the wrapper.
                out = self.text_encoder(ids.to(device), output_hidden_states=True)
                body = getattr(self.text_encoder, "text_model", self.text_encoder)
                hidden = body.final_layer_norm(out.hidden_states[-1 - clip_skip])
        for i, key in enumerate(keys):
            self._cache[key] = (hidden[i: i + 1], len(full[i]) > length)
