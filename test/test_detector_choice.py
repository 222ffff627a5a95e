"""``detector: auto``: OWLv2 on CUDA, OWL-ViT base/32 on CPU; the choice is visible."""

import pytest

from reclip_ros.core.grounder import Grounder, GrounderConfig
from reclip_ros.core.proposals import (CPU_DETECTOR, DEFAULT_DETECTOR, GPU_DETECTOR,
                                       DetectorProposals, resolve_detector)
from reclip_ros.core.types import ModelLoadError
from reclip_ros.runtime.parameters import PARAMETERS


def test_auto_picks_by_device_and_ids_stay_selectable():
    assert DEFAULT_DETECTOR == 'auto'
    assert resolve_detector('auto', 'cpu') == CPU_DETECTOR == 'google/owlvit-base-patch32'
    assert resolve_detector('auto', 'cuda:0') == GPU_DETECTOR == \
        'google/owlv2-base-patch16-ensemble'
    assert resolve_detector('AUTO', 'cpu') == CPU_DETECTOR
    for explicit in (GPU_DETECTOR, CPU_DETECTOR, '/models/my_detector'):
        assert resolve_detector(explicit, 'cpu') == explicit
        assert resolve_detector(explicit, 'cuda:0') == explicit


def test_node_parameter_default_is_auto():
    (spec,) = [p for p in PARAMETERS if p.name == 'detector']
    assert spec.default == 'auto'


def test_auto_on_cpu_loads_owlvit_and_says_so_when_missing(monkeypatch):
    """No hub here: loading fails, and the message names the model 'auto' chose."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ModelLoadError, match='google/owlvit-base-patch32'):
        DetectorProposals('auto', device='cpu')


def test_grounder_reports_the_detector_in_use(tiny_clip_dir, tiny_owlv2_dir, caplog):
    caplog.set_level('INFO', logger='reclip_ros.core.grounder')
    grounder = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), device='cpu',
                                                   detector=tiny_owlv2_dir))
    try:
        assert grounder.detector_name == tiny_owlv2_dir
        assert any(tiny_owlv2_dir in r.getMessage() for r in caplog.records)
    finally:
        grounder.close()
    without = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), device='cpu'))
    assert without.detector_name == ''
    without.close()


def test_int8_detector_proposes_boxes(tiny_owlv2_dir):
    import numpy as np
    det = DetectorProposals(tiny_owlv2_dir, device='cpu', precision='int8', score_threshold=0.0)
    assert det.quantized
    boxes = det.propose(np.full((48, 64, 3), 128, np.uint8))
    assert boxes and all(b.width > 0 and b.height > 0 for b in boxes)
