"""Shared fixtures: tiny randomly initialised checkpoints saved once per test session.

The checkpoints are real ``transformers`` models built from configs and saved with
``save_pretrained``; tests load them through the same ``from_pretrained`` path as
downloaded models. Each fixture returns the checkpoint directory as a string.
"""

import os

import pytest

# Never reach for the network from tests: a missing model must fail fast.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')


def _quiet_torch():
    """Keep torch to one thread: several engineers share two CPU cores."""
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope='session')
def tiny_clip_dir(tmp_path_factory) -> str:
    """A tiny CLIPModel (32-pixel input, random weights, seed 0) saved to a directory."""
    _quiet_torch()
    from reclip_ros.tools.random_models import save_random_clip
    return str(save_random_clip(tmp_path_factory.mktemp('tiny_clip'), preset='tiny', seed=0))


@pytest.fixture(scope='session')
def tiny_clip_dir_b(tmp_path_factory) -> str:
    """Another tiny CLIPModel with different random weights (seed 1), for ensembles."""
    _quiet_torch()
    from reclip_ros.tools.random_models import save_random_clip
    return str(save_random_clip(tmp_path_factory.mktemp('tiny_clip_b'), preset='tiny', seed=1))


@pytest.fixture(scope='session')
def tiny_owlv2_dir(tmp_path_factory) -> str:
    """A tiny Owlv2ForObjectDetection (64-pixel input) with its Owlv2Processor."""
    _quiet_torch()
    from reclip_ros.tools.random_models import save_random_owlv2
    return str(save_random_owlv2(tmp_path_factory.mktemp('tiny_owlv2'), seed=0))


@pytest.fixture(scope='session')
def tiny_siglip_dir(tmp_path_factory) -> str:
    """A tiny SiglipModel (48-pixel input, random weights, logit scale 10, bias -10).

    Its tokenizer is ``SiglipTokenizer`` (spiece.model) when ``protobuf`` is installed,
    else the equivalent ``tokenizers`` twin (see ``random_models.build_siglip_tokenizer``).
    """
    _quiet_torch()
    from reclip_ros.tools.random_models import save_random_siglip
    return str(save_random_siglip(tmp_path_factory.mktemp('tiny_siglip'), seed=0))


@pytest.fixture(scope='module')
def grounder(tiny_clip_dir):
    """A real Grounder over the tiny CLIP checkpoint, without a detector (one per module)."""
    from reclip_ros.core.grounder import Grounder, GrounderConfig
    g = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), detector='',
                                            spacy_model='en_core_web_sm'))
    yield g
    g.close()
