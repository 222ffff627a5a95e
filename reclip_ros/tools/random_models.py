"""Randomly initialised CLIP-family checkpoints, built offline from configs.

They have the architecture (and therefore the cost) of real checkpoints but random weights:
tests load them through the same ``from_pretrained`` path as downloaded models, and the
benchmark measures real ViT-B/32 compute without network access. The CLIP tokenizer is a
byte-level BPE tokenizer whose vocabulary is learnt here from a list of English words that
occur in referring expressions and robot commands, so those words are single tokens; the
SigLIP tokenizer is a SentencePiece unigram model learnt from the same words.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import string
import tempfile
from pathlib import Path
from typing import Iterable, Union

import torch

PathLike = Union[str, Path]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BOS_TOKEN = '<|startoftext|>'
EOS_TOKEN = '<|endoftext|>'

# Words that referring expressions and robot commands are made of.
_WORDS = """
a an the this that these those it its of to in on at by for with without from into onto
and or but not no is are be there here which who what where one two three four five first
second third last next other another each both all any some only very more most less least
photo picture image part side half region section area corner edge middle center centre
left right top bottom above below under underneath over behind front back near nearest far
farthest further furthest closer closest close beside besides between among inside within
outside contained next upper lower leftmost rightmost topmost western eastern north south
east west big bigger biggest large larger largest small smaller smallest tiny tinier tiniest
tall taller tallest short shorter long longer wide narrow round square flat empty full open
closed new old dark light bright shiny plastic metal wooden glass paper ceramic striped
red green blue yellow orange purple pink brown black white gray grey silver gold beige cyan
magenta teal colored coloured
mug cup glass bottle can jar bowl plate dish pan pot kettle spoon fork knife tray box
carton bag basket book books notebook laptop computer keyboard mouse monitor screen phone
tablet remote lamp chair table desk shelf cabinet drawer door window wall floor sofa couch
bed pillow plant vase clock pen pencil marker scissors tape toy ball block cube cylinder
sphere cone object item thing things apple banana orange lemon fruit sandwich cake pizza
person man woman boy girl child people dog cat bird car truck bike bicycle sign tree
robot gripper arm hand camera bin container lid cap handle stack pile row group
pick place put move grab take give bring hand push pull lift drop set get find show point
look go open close turn rotate hold release stack sort please can could would you me
up down out away onto off
""".split()


def _byte_alphabet() -> list:
    """The 256 printable characters that byte-level BPE uses for the 256 byte values."""
    keep = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('\xa1'), ord('\xac') + 1))
            + list(range(ord('\xae'), ord('\xff') + 1)))
    chars = [chr(b) for b in keep]
    extra = 0
    for b in range(256):
        if b not in keep:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_clip_tokenizer(directory: PathLike, extra_words: Iterable[str] = ()):
    """Learn a small CLIP BPE vocabulary, write vocab.json + merges.txt, return the tokenizer.

    The vocabulary holds every byte character (alone and with the end-of-word marker
    ``</w>``, so any text can be encoded), the merges that make each known word a single
    token, and ``<|startoftext|>`` / ``<|endoftext|>`` last, as in OpenAI's CLIP. The
    tokenizer is also saved with ``save_pretrained`` into *directory*.

    Args:
        directory: where to write the tokenizer files (created if missing).
        extra_words: more words to make whole tokens (e.g. object names of a scene).

    Returns:
        The ``transformers.CLIPTokenizer`` loaded from the written files.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({w.lower() for w in list(_WORDS) + [str(w) for w in extra_words]
                    if str(w).strip()})

    # Train merges with the exact normaliser and pre-tokeniser CLIPTokenizer uses.
    template = CLIPTokenizer().backend_tokenizer
    learner = Tokenizer(BPE(end_of_word_suffix='</w>', continuing_subword_prefix=''))
    learner.normalizer = template.normalizer
    learner.pre_tokenizer = template.pre_tokenizer
    alphabet = _byte_alphabet()
    trainer = BpeTrainer(vocab_size=100000, min_frequency=0, show_progress=False,
                         initial_alphabet=alphabet, end_of_word_suffix='</w>',
                         continuing_subword_prefix='')
    learner.train_from_iterator(words, trainer=trainer)
    learnt = json.loads(learner.to_str())['model']
    merges = [m if isinstance(m, str) else ' '.join(m) for m in learnt['merges']]

    vocab = {}
    for token in alphabet + [c + '</w>' for c in alphabet]:
        vocab.setdefault(token, len(vocab))
    for a_b in merges:
        vocab.setdefault(a_b.replace(' ', ''), len(vocab))
    for token in sorted(learnt['vocab'], key=learnt['vocab'].get):
        vocab.setdefault(token, len(vocab))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)

    # The plain vocab/merges files are what OpenAI-style loaders read; tokenizer.json and
    # tokenizer_config.json (save_pretrained) are what AutoTokenizer reads.
    (directory / 'vocab.json').write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n')
    pairs = [tuple(m.split(' ')) for m in merges]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77)
    tokenizer.save_pretrained(str(directory))
    return CLIPTokenizer.from_pretrained(str(directory))


def _clip_image_processor(size: int):
    """A CLIPImageProcessor that resizes and centre-crops to *size* with CLIP's statistics."""
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor(size={'shortest_edge': size},
                              crop_size={'height': size, 'width': size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


_CLIP_PRESETS = {
    'tiny': dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=77),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16),
    'vit-b-32': dict(
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=8, max_position_embeddings=77),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=224, patch_size=32),
        projection_dim=512),
}
CLIP_PRESETS = tuple(_CLIP_PRESETS)


def save_random_clip(directory: PathLike, preset: str = 'tiny', seed: int = 0) -> Path:
    """Save a randomly initialised ``CLIPModel`` with tokenizer and image processor.

    Args:
        directory: output directory (created if missing).
        preset: ``'tiny'`` (a few hundred KB, 32-pixel input) or ``'vit-b-32'`` (the
            ViT-B/32 architecture, about 600 MB in fp32).
        seed: torch seed for the weights; different seeds give different models.

    Returns:
        The directory, loadable by ``ClipModel.load`` and ``CLIPModel.from_pretrained``.

    Raises:
        ValueError: unknown preset.
    """
    from transformers import CLIPConfig, CLIPModel

    if preset not in _CLIP_PRESETS:
        raise ValueError(f'unknown preset {preset!r}; choose one of {CLIP_PRESETS}')
    spec = _CLIP_PRESETS[preset]
    directory = Path(directory)
    tokenizer = build_clip_tokenizer(directory)
    vocab_size = len(tokenizer) if preset == 'tiny' else max(49408, len(tokenizer))
    text = dict(spec['text'], vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(text_config=text, vision_config=dict(spec['vision']),
                        projection_dim=spec['projection_dim'])
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    _clip_image_processor(spec['vision']['image_size']).save_pretrained(str(directory))
    return directory


def _owl_text_config(tokenizer, hidden: int, intermediate: int, layers: int,
                     heads: int) -> dict:
    """The text tower of a random OWL model over *tokenizer* (16 positions, its ids)."""
    return dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=16,
                vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def save_random_owlv2(directory: PathLike, seed: int = 0) -> Path:
    """Save a tiny randomly initialised ``Owlv2ForObjectDetection`` with its processor.

    The result loads with ``AutoModelForObjectDetection`` and ``AutoProcessor`` (64-pixel
    input, 8-pixel patches: 64 box predictions per image).
    """
    from transformers import (Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor,
                              Owlv2Processor)

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(tmp)
    text = _owl_text_config(tokenizer, hidden=32, intermediate=64, layers=2, heads=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=64, patch_size=8)
    # OWL compares image-class embeddings (text hidden size) with projected text embeddings.
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.model_max_length = 16
    image_processor = Owlv2ImageProcessor(size={'height': 64, 'width': 64},
                                          image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        str(directory))
    return directory


# The architectures of the two default detectors (``detector: auto``), at their native input
# sizes, for timing them offline (``reclip bench --random-detectors``).
_OWL_PRESETS = {
    'owlv2-base-16': dict(kind='owlv2', image_size=960, patch_size=16),
    'owlvit-base-32': dict(kind='owlvit', image_size=768, patch_size=32),
}
OWL_PRESETS = tuple(_OWL_PRESETS)


def save_random_owl(directory: PathLike, preset: str = 'owlvit-base-32', seed: int = 0) -> Path:
    """Save a randomly initialised OWLv2 / OWL-ViT with a base-size architecture.

    Vision: ViT-B (768 wide, 12 layers) at the preset's patch and input size; text: the
    CLIP base text tower over this module's small tokenizer. Same compute per frame as the
    released checkpoints of that architecture; the weights are random.
    """
    from transformers import (Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor,
                              Owlv2Processor, OwlViTConfig, OwlViTForObjectDetection,
                              OwlViTImageProcessor, OwlViTProcessor)

    if preset not in _OWL_PRESETS:
        raise ValueError(f'unknown preset {preset!r}; choose one of {OWL_PRESETS}')
    spec = _OWL_PRESETS[preset]
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(tmp)
    text = _owl_text_config(tokenizer, hidden=512, intermediate=2048, layers=12, heads=8)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=spec['image_size'],
                  patch_size=spec['patch_size'])
    size = {'height': spec['image_size'], 'width': spec['image_size']}
    torch.manual_seed(seed)
    tokenizer.model_max_length = 16
    if spec['kind'] == 'owlv2':
        model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision,
                                                    projection_dim=512)).eval()
        processor = Owlv2Processor(
            image_processor=Owlv2ImageProcessor(size=size, image_mean=list(CLIP_MEAN),
                                                image_std=list(CLIP_STD)),
            tokenizer=tokenizer)
    else:
        model = OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision,
                                                      projection_dim=512)).eval()
        processor = OwlViTProcessor(
            image_processor=OwlViTImageProcessor(size=size, crop_size=size,
                                                 image_mean=list(CLIP_MEAN),
                                                 image_std=list(CLIP_STD)),
            tokenizer=tokenizer)
    model.save_pretrained(str(directory), safe_serialization=True)
    processor.save_pretrained(str(directory))
    return directory


SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
SIGLIP_TOKENIZER_FORMATS = ('auto', 'sentencepiece', 'fast')
# SentencePiece ids as in Google's SigLIP vocabularies: padding, end of text, unknown.
_SP_PAD, _SP_EOS, _SP_UNK = 0, 1, 2


def train_sentencepiece(extra_words: Iterable[str] = ()) -> bytes:
    """Learn a small SentencePiece unigram model (the kind SigLIP uses); return its bytes.

    Every word of the built-in list (and of *extra_words*) becomes one piece ``'\u2581word'``;
    lowercase letters and digits are always in the vocabulary, so any lowercase ASCII text
    is encoded without unknown pieces. Ids 0, 1, 2 are ``<pad>``, ``</s>``, ``<unk>``.
    Training is deterministic and takes well under a second.
    """
    import sentencepiece as spm

    words = sorted({w.lower() for w in list(_WORDS) + [str(w) for w in extra_words]
                    if str(w).strip()})
    # Each word as a sentence of repeats: frequent enough that unigram pruning keeps it.
    sentences = [' '.join([w] * 20) for w in words]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, model_type='unigram',
        vocab_size=2 * len(words) + 100, hard_vocab_limit=False, character_coverage=1.0,
        required_chars=string.ascii_lowercase + string.digits,
        normalization_rule_name='identity', pad_id=_SP_PAD, eos_id=_SP_EOS, unk_id=_SP_UNK,
        bos_id=-1, num_threads=1, minloglevel=2)
    return model.getvalue()


def protobuf_available() -> bool:
    """True when the ``protobuf`` package (needed by ``SiglipTokenizer``) is importable."""
    try:
        return importlib.util.find_spec('google.protobuf') is not None
    except ImportError:  # no 'google' namespace package at all
        return False


def _siglip_fast_tokenizer(model_proto: bytes, max_length: int):
    """A ``tokenizers`` twin of ``SiglipTokenizer`` over the same SentencePiece pieces.

    Same text canonicalisation as ``SiglipTokenizer`` (lower case, punctuation removed,
    whitespace collapsed and stripped), the same unigram pieces and scores, ``</s>``
    appended; loads through ``AutoTokenizer`` without ``protobuf``.
    """
    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    pieces = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    backend = Tokenizer(Unigram(pieces, unk_id=_SP_UNK, byte_fallback=False))
    backend.normalizer = normalizers.Sequence([
        normalizers.Lowercase(),
        normalizers.Replace(Regex('[' + re.escape(string.punctuation) + ']'), ''),
        normalizers.Replace(Regex(r'\s+'), ' '),
        normalizers.Strip(),
    ])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581',
                                                     prepend_scheme='always')
    backend.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme='always')
    eos = sp.id_to_piece(_SP_EOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f'$A {eos}', pair=f'$A {eos} $B {eos}', special_tokens=[(eos, _SP_EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, pad_token=eos,
                                   unk_token=sp.id_to_piece(_SP_UNK),
                                   model_max_length=max_length)


def build_siglip_tokenizer(directory: PathLike, fmt: str = 'auto', max_length: int = 64,
                           extra_words: Iterable[str] = ()):
    """Write a SigLIP tokenizer learnt from the built-in word list; return it loaded.

    Args:
        directory: where to write the files (created if missing).
        fmt: ``'sentencepiece'``: ``spiece.model`` + ``SiglipTokenizer`` config, the layout
            of Google's SigLIP checkpoints (loading it needs the ``protobuf`` package);
            ``'fast'``: ``tokenizer.json`` with the same pieces and canonicalisation, for
            environments without ``protobuf``; ``'auto'``: ``'sentencepiece'`` when
            ``protobuf`` is importable, else ``'fast'``. ``spiece.model`` is written in
            every format.
        max_length: the tokenizer's ``model_max_length`` (the text model's positions).
        extra_words: more words to make whole pieces.

    Raises:
        ValueError: unknown format.
        ImportError: ``'sentencepiece'`` asked for without ``protobuf`` installed.
    """
    from transformers import AutoTokenizer

    if fmt not in SIGLIP_TOKENIZER_FORMATS:
        raise ValueError(f'unknown tokenizer format {fmt!r}; choose one of '
                         f'{SIGLIP_TOKENIZER_FORMATS}')
    if fmt == 'auto':
        fmt = 'sentencepiece' if protobuf_available() else 'fast'
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    proto = train_sentencepiece(extra_words)
    (directory / 'spiece.model').write_bytes(proto)
    if fmt == 'sentencepiece':
        if not protobuf_available():
            raise ImportError("SiglipTokenizer needs the 'protobuf' package "
                              "(pip install protobuf); use fmt='fast' without it")
        from transformers import SiglipTokenizer
        tokenizer = SiglipTokenizer(str(directory / 'spiece.model'),
                                    model_max_length=max_length)
    else:
        tokenizer = _siglip_fast_tokenizer(proto, max_length)
    tokenizer.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


def _siglip_image_processor(size: int):
    """SigLIP's image processor: square resize to *size* (bicubic), mean = std = 0.5."""
    try:  # the PIL backend needs no torchvision; both save the same config
        from transformers import SiglipImageProcessorPil as processor_class
    except ImportError:  # older transformers
        from transformers import SiglipImageProcessor as processor_class
    return processor_class(size={'height': size, 'width': size},
                           image_mean=list(SIGLIP_MEAN), image_std=list(SIGLIP_STD))


def save_random_siglip(directory: PathLike, seed: int = 0, tokenizer: str = 'auto') -> Path:
    """Save a tiny randomly initialised ``SiglipModel`` with tokenizer and image processor.

    48-pixel input with 12-pixel patches, 2-layer towers of width 32, 32 text positions;
    ``logit_scale`` and ``logit_bias`` are set to SigLIP's initial values (``log 10`` and
    ``-10``, so ``ClipModel.logit_scale`` is 10 and ``logit_bias`` -10) rather than left
    at transformers' zero initialisation, so that tests see a non-trivial bias.

    Args:
        directory: output directory (created if missing).
        seed: torch seed for the weights.
        tokenizer: tokenizer format, see :func:`build_siglip_tokenizer`.

    Returns:
        The directory, loadable by ``ClipModel.load`` and ``SiglipModel.from_pretrained``.
    """
    from transformers import SiglipConfig, SiglipModel

    directory = Path(directory)
    max_length, image_size = 32, 48
    tok = build_siglip_tokenizer(directory, fmt=tokenizer, max_length=max_length)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=max_length, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=None)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=image_size, patch_size=12)
    config = SiglipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(str(directory), safe_serialization=True)
    _siglip_image_processor(image_size).save_pretrained(str(directory))
    return directory
