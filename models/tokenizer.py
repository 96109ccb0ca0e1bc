"""A small word-level tokenizer built from training titles, for SigLIP text towers trained from scratch.

Real SigLIP checkpoints ship a SentencePiece tokenizer; with no model hub here (`--init tiny|base`) there
is none to download, and a 32k-piece vocabulary would be mostly untrained rows anyway. Titles of
listings are short attribute phrases ("navy striped tote bag"), so one token per lower-cased
whitespace-separated word is enough. The result is a `PreTrainedTokenizerFast` saved next to the model,
so `AutoTokenizer.from_pretrained(CKPT_DIR)` loads it like any other tokenizer.

Like SigLIP, titles are padded to a fixed length and the text tower pools the LAST position, so an end
token is appended and padding fills the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"


def build_word_tokenizer(
    titles: Iterable[str], *, max_length: int = 16, min_count: int = 1, max_vocab: int = 8192
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `titles` (ids 0..2 are pad, unk, eos; words by frequency then name)."""
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    counts: Counter[str] = Counter()
    for title in titles:
        counts.update(normalizer.normalize_str(title).split())
    # Sorting by (-count, word) makes the vocabulary independent of the order titles came in.
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    vocab = {PAD: 0, UNK: 1, EOS: 2}
    for word in words[: max_vocab - len(vocab)]:
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
    )
