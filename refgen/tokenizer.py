"""CLIP BPE tokenizer in HF `tokenizers` JSON, built from OpenAI's bpe_simple_vocab_16e6.txt.gz
(shipped, MIT-licensed, inside the open_clip_torch wheel)."""
import gzip
import json
import os

import torch

BOS, EOS = 49406, 49407
CLIP_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def bpe_file():
    import open_clip

    return os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode():
    """The reversible byte -> printable character table of GPT-2/CLIP."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]  # CLIP orders the vocabulary like this table (printable bytes first)


def vocab_and_merges():
    with gzip.open(bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(l.split()) for l in lines[1:49152 - 256 - 2 + 1]]
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408 and len(merges) == 48894
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tokenizer_json():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import AddedToken

    vocab, merges = vocab_and_merges()
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>",
                     continuing_subword_prefix="", fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_REGEX), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", EOS), ("<|startoftext|>", BOS),
                                                      add_prefix_space=False, trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|startoftext|>", special=True, normalized=True),
                            AddedToken("<|endoftext|>", special=True, normalized=True)])
    tok.enable_truncation(max_length=77)
    tok.enable_padding(length=77, pad_id=EOS, pad_token="<|endoftext|>")
    obj = json.loads(tok.to_str())
    # Classic "a b" merge strings (readable by every tokenizers release, old Rust crates included).
    obj["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in obj["model"]["merges"]]
    return json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n"


def write(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = build_tokenizer_json()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


class Tok:
    """Encoding helpers on the written tokenizer file."""

    def __init__(self, tokenizer):
        self.t = tokenizer

    def ids(self, text, pad):
        ids = list(self.t.encode(text, add_special_tokens=True).ids)
        assert len(ids) == 77
        n = ids.index(EOS) + 1
        return [i if k < n else pad for k, i in enumerate(ids)], n

    def batch(self, prompts):
        l = [self.ids(p, EOS) for p in prompts]
        g = [self.ids(p, 0) for p in prompts]
        return (torch.tensor([x[0] for x in l], dtype=torch.int64), torch.tensor([x[0] for x in g], dtype=torch.int64),
                torch.tensor([x[1] for x in l], dtype=torch.int64))

    def word(self, word):
        """Token ids of one word, BOS/EOS removed, no truncation."""
        self.t.no_truncation()
        self.t.no_padding()
        ids = list(self.t.encode(word, add_special_tokens=False).ids)
        self.t.enable_truncation(max_length=77)
        self.t.enable_padding(length=77, pad_id=EOS, pad_token="<|endoftext|>")
        return ids


def cross_check(tok, texts):
    """Ids equal open_clip's SimpleTokenizer and transformers' CLIPTokenizer (on texts that
    ftfy/html.unescape leave unchanged)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    vocab, merges = vocab_and_merges()
    hf = CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in merges])
    if True:
        checked = 0
        for text in texts:
            ours = tok.word(text)
            oc = simple.encode(text)
            h = hf(text, add_special_tokens=False)["input_ids"]
            assert ours == oc, (text, ours, oc)
            assert ours == h, (text, ours, h)
            checked += 1
    return {"texts": checked, "open_clip_SimpleTokenizer": "identical", "transformers_CLIPTokenizer": "identical"}
