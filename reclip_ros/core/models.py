"""CLIP-family image-text models: loading (offline first), devices, precision, encoding.

:class:`ClipModel` wraps any checkpoint that ``transformers`` loads with ``AutoModel`` and
that has ``get_image_features`` / ``get_text_features`` (CLIP ViT-B/32, ViT-B/16, ViT-L/14,
SigLIP, ...). It carries its own preprocessing constants (input size, mean, std) so that the
caller can build pixel batches with :func:`reclip_ros.core.isolation.to_model_input`.

Loading never runs code from the checkpoint (no ``trust_remote_code``) and reads weights
only from safetensors files. The local Hugging Face cache is tried first, so an offline
machine fails fast with :class:`ModelLoadError` that says how to fetch the model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch

from reclip_ros.core.config import PRECISIONS  # noqa: F401
from reclip_ros.core.types import DeviceError, ModelLoadError

INT8 = 'int8'  # fp32 weights loaded, then every Linear quantised (CPU; core/int8.py)
_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16,
           INT8: torch.float32}
MODEL_ALIASES = {'sim': 'sim_clip'}
SIGLIP_TYPES = ('siglip',)
# Checkpoint types that load with AutoModel and have get_*_features but take other inputs.
UNSUPPORTED_TYPES = {
    'siglip2': 'SigLIP 2 checkpoints take variable-resolution patch sequences '
               '(pixel_attention_mask, spatial_shapes), not square images',
}
_DEFAULT_STATS = {  # (mean, std) when a preprocessor config lacks them
    'clip': ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    'siglip': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def resolve_device(requested: str = 'auto') -> str:
    """Return the torch device string to use for *requested*.

    Args:
        requested: ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'`` or
            ``'cuda:N'``.

    Returns:
        ``'cpu'`` or ``'cuda:N'`` (the device actually used).

    Raises:
        DeviceError: CUDA asked for but not available, a CUDA index out of range, or an
            unknown device string.
    """
    text = str(requested or 'auto').strip().lower()
    if text == 'auto':
        if torch.cuda.is_available():
            return f'cuda:{torch.cuda.current_device()}'
        return 'cpu'
    if text == 'cpu':
        return 'cpu'
    if text == 'cuda' or text.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{requested}' requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'}); "
                "use device 'cpu' or 'auto'")
        if text == 'cuda':
            return f'cuda:{torch.cuda.current_device()}'
        index_text = text.split(':', 1)[1]
        if not index_text.isdigit():
            raise DeviceError(f"bad device '{requested}': expected 'cuda:N' with N an integer")
        count = torch.cuda.device_count()
        if int(index_text) >= count:
            raise DeviceError(f"device '{requested}' requested but only {count} CUDA "
                              f"device(s) exist (cuda:0..cuda:{count - 1})")
        return f'cuda:{int(index_text)}'
    raise DeviceError(f"unknown device '{requested}'; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def resolve_precision(precision: str, device: str) -> torch.dtype:
    """Return the torch dtype for *precision* on *device* ('auto': fp16 on CUDA, else fp32).

    'int8' loads fp32 weights (its linear layers are quantised after loading).

    Raises:
        ValueError: unknown precision name.
    """
    return _DTYPES[resolved_precision_name(precision, device)]


def precision_name(precision: str) -> str:
    """The normalised precision name ('auto', 'fp32', ..., 'int8')."""
    return str(precision or 'auto').strip().lower()


def resolved_precision_name(precision: str, device: str) -> str:
    """The precision that runs on *device*: 'auto' is 'fp16' on CUDA and 'fp32' elsewhere.

    Raises:
        ValueError: unknown precision name.
    """
    text = precision_name(precision)
    if text not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; use one of {PRECISIONS}")
    if text == 'auto':
        return 'fp16' if str(device).startswith('cuda') else 'fp32'
    return text


def _package_model_dirs(directory_name: str) -> List[Path]:
    """Places where an embedded model directory may live, most specific first."""
    here = Path(__file__)
    candidates = []
    # Source tree (also reached through the installed symlinks): <repo>/models/<name>.
    for core_dir in (here.resolve().parent, here.parent):
        candidates.append(core_dir.parents[1] / 'models' / directory_name)
    candidates.append(Path(sys.prefix) / 'share' / 'reclip_ros' / 'models' / directory_name)
    # An installed ROS package: <prefix>/share/reclip_ros for each AMENT_PREFIX_PATH entry
    # (the prefixes ament_index searches; read here so the core needs no ROS package).
    for prefix in filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        candidates.append(Path(prefix) / 'share' / 'reclip_ros' / 'models' / directory_name)
    unique = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def resolve_model_path(name: str) -> str:
    """Map a model name to what ``from_pretrained`` should load.

    ``'sim'`` is the model embedded in the package (``models/sim_clip``, in the source tree
    or in ``share/reclip_ros/models``); an existing directory is returned as an absolute
    path; anything else is returned unchanged (a Hugging Face hub id).

    Raises:
        ModelLoadError: the embedded model is missing, or the name is empty.
    """
    name = str(name or '').strip()
    if not name:
        raise ModelLoadError('empty model name; give a hub id, a local directory or "sim"')
    if name in MODEL_ALIASES:
        places = _package_model_dirs(MODEL_ALIASES[name])
        for path in places:
            if (path / 'config.json').is_file():
                return str(path)
        searched = ', '.join(str(p) for p in places)
        raise ModelLoadError(
            f"embedded model '{name}' not found (looked in {searched}); build it with the "
            "simulation model trainer or reinstall the package")
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    return name


def _looks_like_local_path(name: str) -> bool:
    """True for names that can only be a filesystem path, not a hub id ('org/model')."""
    return (name.startswith(('/', './', '../', '~', '.\\')) or os.sep + os.sep in name
            or name.count('/') > 1 or os.path.exists(name))


def fetch_hint(name: str) -> str:
    """How to make model *name* available offline: one sentence for an error message.

    The one hint of the CLIP models and the detector: a missing or incomplete local
    directory, or a hub id to download once and copy.
    """
    if name.startswith(('/', '.', '~')) and not os.path.isdir(os.path.expanduser(name)):
        return f'there is no directory {name!r}'
    if os.path.isdir(name):
        return (f'the directory {name!r} must hold config.json, model.safetensors and the '
                'preprocessor config (save_pretrained output)')
    home = os.environ.get('HF_HOME') or os.path.join('~', '.cache', 'huggingface')
    return (f"To use it offline, on a machine with network run `huggingface-cli download "
            f"{name}` (or `hf download {name}`) and copy the cache to this machine's HF_HOME "
            f"({home}), set HF_HOME to a cache that holds it, or pass the local directory of "
            "the model (config.json, model.safetensors, tokenizer and preprocessor files; "
            "only safetensors weights are accepted).")


#: The end of a missing-model message when downloads are off.
DOWNLOAD_HINT = (' Or let this run download it: the node parameter allow_download:=true, '
                 'the command-line flag --allow-download.')


def _load_parts(path: str, dtype: torch.dtype, local_only: bool):
    """Load (config, model, tokenizer, preprocessor dict) with the given locality."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.image_processing_base import ImageProcessingMixin

    common = dict(local_files_only=local_only, trust_remote_code=False)
    config = AutoConfig.from_pretrained(path, **common)
    model = AutoModel.from_pretrained(path, use_safetensors=True, dtype=dtype, **common)
    tokenizer = AutoTokenizer.from_pretrained(path, **common)
    processor_dict, _ = ImageProcessingMixin.get_image_processor_dict(
        path, local_files_only=local_only)
    return config, model, tokenizer, processor_dict


def _missing_package_message(name: str, exc: ImportError) -> str:
    """A one-paragraph ModelLoadError text for a Python package that a model part needs."""
    text = ' '.join(str(exc).split())
    needed = [pkg for pkg in ('protobuf', 'sentencepiece', 'tiktoken', 'torchvision', 'scipy')
              if pkg in text.lower()]
    fix = (f"install it (`pip install {' '.join(needed)}`)" if needed
           else 'install the package it names')
    return (f"cannot load model '{name}': a Python package it needs is missing ({text}). "
            f"Fix: {fix}. SigLIP tokenizers need both sentencepiece and protobuf.")


_OFFLINE_LOCK = threading.Lock()
_OFFLINE_USERS = [0, False]  # loads inside hub_offline() now, huggingface_hub's value before


@contextlib.contextmanager
def hub_offline(offline: bool = True) -> Iterator[None]:
    """No request to the Hugging Face hub inside (when *offline*), as ``HF_HUB_OFFLINE=1``.

    ``local_files_only`` keeps transformers from downloading weights, but huggingface_hub
    still makes requests of its own (for example it fetches an "agent harnesses" registry
    when it builds request headers: seen with huggingface_hub 1.x, test/test_offline.py).
    Its offline switch stops every request; it is set for the duration of the load and
    restored afterwards (shared by concurrent loads).
    """
    if not offline:
        yield
        return
    from huggingface_hub import constants
    with _OFFLINE_LOCK:
        if _OFFLINE_USERS[0] == 0:
            _OFFLINE_USERS[1] = constants.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = True
        _OFFLINE_USERS[0] += 1
    try:
        yield
    finally:
        with _OFFLINE_LOCK:
            _OFFLINE_USERS[0] -= 1
            if _OFFLINE_USERS[0] == 0:
                constants.HF_HUB_OFFLINE = _OFFLINE_USERS[1]


def _offline_forced() -> bool:
    return os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in ('1', 'true', 'yes', 'on')


def _image_size(processor: dict, config) -> int:
    """Model input size: the processor's crop (or resize) size, else the vision config's."""
    for key in ('crop_size', 'size'):
        value = processor.get(key)
        if key == 'crop_size' and not processor.get('do_center_crop', True):
            continue
        if isinstance(value, dict):
            for sub in ('height', 'shortest_edge', 'width'):
                if value.get(sub):
                    return int(value[sub])
        elif isinstance(value, (int, float)) and value:
            return int(value)
    vision = getattr(config, 'vision_config', None)
    if vision is not None and getattr(vision, 'image_size', None):
        return int(vision.image_size)
    raise ModelLoadError('cannot tell the input image size: the preprocessor config has no '
                         'size and the model config no vision_config.image_size')


def _features(output) -> torch.Tensor:
    """The projected embedding from ``get_*_features`` (tensor or output with pooler)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, 'pooler_output', None)
    if pooled is None and isinstance(output, (tuple, list)):
        pooled = output[0]
    return pooled


#: The resize filter when a checkpoint names none: PIL bicubic, as CLIP's own preprocessing.
_DEFAULT_RESAMPLE = 3


class ClipModel:
    """One loaded CLIP-family model with its tokenizer and image preprocessing constants.

    Attributes:
        name: the name it was loaded by (hub id, directory or alias).
        device: the torch device actually used (``'cpu'`` or ``'cuda:N'``).
        dtype: the torch dtype of the weights.
        image_size: square input resolution in pixels.
        image_mean, image_std: per-channel normalisation (RGB, for [0, 1] pixel values).
        resample: the checkpoint's resize filter (PIL numbering: 3 bicubic, 2 bilinear...),
            from its ``preprocessor_config.json``; isolated images are resized with it.
        logit_scale: the model's temperature, ``exp()`` already applied (100 for CLIP).
        logit_bias: additive logit bias (0 for CLIP; learnt for SigLIP).
    """

    def __init__(self, name: str, model, tokenizer, device: str, dtype: torch.dtype,
                 image_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                 model_type: str = 'clip', text_max_length: int = 77, resample: int = 3,
                 quantized: bool = False):
        self.name = name
        self.quantized = bool(quantized)
        self.resample = int(resample)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.image_size = int(image_size)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.model_type = model_type
        self.text_max_length = int(text_max_length)
        self._lock = threading.Lock()
        self.offloaded = False
        scale = getattr(model, 'logit_scale', None)
        bias = getattr(model, 'logit_bias', None)
        self.logit_scale = float(scale.detach().float().exp().item()) if scale is not None \
            else 1.0
        self.logit_bias = float(bias.detach().float().reshape(-1)[0].item()) \
            if bias is not None else 0.0

    @classmethod
    def load(cls, name_or_dir: str, device: str = 'auto', precision: str = 'auto',
             allow_download: bool = False) -> ClipModel:
        """Load a checkpoint by hub id, local directory or alias (``'sim'``).

        Only the local cache is read (no network request) unless *allow_download* is true;
        then a model missing from the cache is downloaded, except where ``HF_HUB_OFFLINE``
        is set.

        Args:
            name_or_dir: a hub id (default: ``config.DEFAULT_MODELS``), a directory or 'sim'.
            device: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
            precision: ``'auto'`` (fp16 on CUDA, fp32 on CPU), ``'fp32'``, ``'fp16'``,
                ``'bf16'`` or ``'int8'`` (CPU: every linear layer dynamically quantised).

        Raises:
            DeviceError: the device is not available.
            ModelLoadError: the model cannot be found, downloaded or used.
        """
        resolved = resolve_device(device)
        try:
            dtype = resolve_precision(precision, resolved)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        quantize = precision_name(precision) == INT8
        if quantize:
            from reclip_ros.core.int8 import int8_unavailable
            problem = int8_unavailable(resolved)
            if problem:
                raise DeviceError(problem)
        path = resolve_model_path(name_or_dir)
        local_dir = os.path.isdir(path)
        if not local_dir and _looks_like_local_path(path):
            raise ModelLoadError(f"model directory '{name_or_dir}' does not exist")
        try:
            with hub_offline(not allow_download):
                parts = _load_parts(path, dtype, local_only=True)
        except ImportError as exc:
            raise ModelLoadError(_missing_package_message(str(name_or_dir), exc)) from exc
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if local_dir:
                raise ModelLoadError(
                    f"cannot load model from directory '{path}': {exc}. It needs config.json, "
                    "model.safetensors (safetensors only), tokenizer files and "
                    "preprocessor_config.json") from exc
            if not allow_download:
                raise ModelLoadError(
                    f"model '{name_or_dir}' is not in the local Hugging Face cache, and "
                    f"downloads are off (allow_download is false). {fetch_hint(name_or_dir)}"
                    f"{DOWNLOAD_HINT}") from exc
            if _offline_forced():
                raise ModelLoadError(
                    f"model '{name_or_dir}' is not in the local Hugging Face cache and "
                    f"HF_HUB_OFFLINE is set. {fetch_hint(name_or_dir)}") from exc
            try:
                parts = _load_parts(path, dtype, local_only=False)
            except ImportError as exc2:
                raise ModelLoadError(
                    _missing_package_message(str(name_or_dir), exc2)) from exc2
            except Exception as exc2:  # network errors come in many types
                raise ModelLoadError(
                    f"model '{name_or_dir}' is not in the local Hugging Face cache and could "
                    f"not be downloaded ({type(exc2).__name__}: {exc2}). "
                    f"{fetch_hint(name_or_dir)}") from exc2
        config, model, tokenizer, processor = parts
        model_type = str(config.model_type)
        if model_type in UNSUPPORTED_TYPES:
            raise ModelLoadError(f"model '{name_or_dir}' (type {model_type}) is not supported: "
                                 f"{UNSUPPORTED_TYPES[model_type]}; use a CLIP or SigLIP "
                                 "checkpoint")
        for method in ('get_image_features', 'get_text_features'):
            if not hasattr(model, method):
                raise ModelLoadError(
                    f"model '{name_or_dir}' (type {config.model_type}) is not a CLIP-family "
                    f"image-text model: it has no {method}()")
        try:
            model = model.to(device=resolved, dtype=dtype).eval()
        except RuntimeError as exc:
            raise DeviceError(f"cannot move model '{name_or_dir}' to {resolved}: {exc}") from exc
        if quantize:
            from reclip_ros.core.int8 import quantize_linears
            quantize_linears(model)
        image_size = _image_size(processor, config)
        default_mean, default_std = _DEFAULT_STATS.get(
            'siglip' if model_type in SIGLIP_TYPES else 'clip')
        mean = processor.get('image_mean') or default_mean
        std = processor.get('image_std') or default_std
        text_cfg = getattr(config, 'text_config', None)
        max_positions = getattr(text_cfg, 'max_position_embeddings', None) or 77
        tok_max = getattr(tokenizer, 'model_max_length', None) or max_positions
        max_length = int(min(max_positions, tok_max if tok_max < 10 ** 6 else max_positions))
        resample = processor.get('resample', _DEFAULT_RESAMPLE)
        return cls(str(name_or_dir), model, tokenizer, resolved, dtype, image_size, mean, std,
                   model_type=model_type, text_max_length=max_length,
                   resample=int(resample) if resample is not None else _DEFAULT_RESAMPLE,
                   quantized=quantize)

    @property
    def loaded(self) -> bool:
        """False after :meth:`unload`."""
        return self.model is not None

    def _require_model(self):
        if self.model is None:
            raise RuntimeError(f"model '{self.name}' was unloaded")
        if self.offloaded:
            self.restore()
        return self.model

    def offload(self) -> bool:
        """Move the weights of a CUDA model to host memory and free the GPU memory.

        The model stays loaded: :meth:`restore` (or the next encode) moves it back. Used
        while a node is inactive. Returns True when something was moved (no-op on CPU).
        """
        with self._lock:
            if self.model is None or self.offloaded or not self.device.startswith('cuda'):
                return False
            self.model.to('cpu')
            self.offloaded = True
        torch.cuda.empty_cache()
        return True

    def restore(self) -> bool:
        """Move offloaded weights back to the model's device; True when something moved."""
        with self._lock:
            if self.model is None or not self.offloaded:
                return False
            self.model.to(self.device)
            self.offloaded = False
        return True

    def encode_images(self, batch_nchw: np.ndarray) -> torch.Tensor:
        """Embed a normalised float32 NCHW batch; return L2-normalised float32 CPU rows."""
        model = self._require_model()
        batch = np.asarray(batch_nchw, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f'expected an (N, 3, H, W) batch, got shape {batch.shape}')
        if batch.shape[0] == 0:
            return torch.zeros((0, 0), dtype=torch.float32)
        with self._lock, torch.inference_mode():
            pixels = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype)
            feats = _features(model.get_image_features(pixel_values=pixels))
            feats = feats.float()
            feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return feats.cpu()

    def tokenize(self, texts: Sequence[str]) -> dict:
        """Tokenise *texts* as the model was trained.

        CLIP: padded to the longest text, with an attention mask (CLIP pools the end-of-text
        token behind a causal mask, so padding never changes an embedding).
        SigLIP: padded to ``text_max_length`` with the pad token and **no** attention mask:
        SigLIP was trained that way (pad tokens are attended) and pools the last position,
        so both the fixed length and the absent mask are part of the model.
        """
        if self.model_type in SIGLIP_TYPES:
            enc = self.tokenizer(list(texts), padding='max_length', truncation=True,
                                 max_length=self.text_max_length, return_tensors='pt')
            return {'input_ids': enc['input_ids']}
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.text_max_length, return_tensors='pt')
        return {k: enc[k] for k in ('input_ids', 'attention_mask') if k in enc}

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed *texts*; return L2-normalised float32 CPU rows, one per text."""
        model = self._require_model()
        texts = [str(t) for t in texts]
        if not texts:
            return torch.zeros((0, 0), dtype=torch.float32)
        inputs = self.tokenize(texts)
        with self._lock, torch.inference_mode():
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            feats = _features(model.get_text_features(**inputs)).float()
            feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return feats.cpu()

    def unload(self) -> None:
        """Free the weights (and cached GPU memory); the object cannot encode afterwards."""
        with self._lock:
            self.model = None
        if self.device.startswith('cuda') and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def describe(self) -> str:
        """One line: name, type, device, dtype and input size."""
        precision = INT8 if self.quantized else str(self.dtype).replace('torch.', '')
        return f'{self.name} ({self.model_type}, {self.device}, {precision}, {self.image_size}px)'

    def __repr__(self) -> str:
        return f'ClipModel({self.describe()})'


def load_models(names: Sequence[str], device: str = 'auto', precision: str = 'auto',
                allow_download: bool = False) -> Tuple[ClipModel, ...]:
    """Load several models for an ensemble (all on the same device and precision)."""
    if not names:
        raise ModelLoadError('no model given')
    models: List[ClipModel] = []
    try:
        for name in names:
            models.append(ClipModel.load(name, device=device, precision=precision,
                                         allow_download=allow_download))
    except Exception:
        for model in models:
            model.unload()
        raise
    return tuple(models)
