"""Proposal filtering, given boxes, and detector proposals from tiny real checkpoints."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reclip_ros.core.proposals import (DetectorProposals, GivenBoxes, ProposalSource,
                                       filter_proposal_indices, filter_proposals, nms_indices)
from reclip_ros.core.types import Box, ModelLoadError

# -- filter_proposals ------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = [Box(0, 0, 10, 10), Box(1, 1, 10, 10), Box(50, 50, 10, 10), Box(0, 0, 10, 11)]
    scores = [0.5, 0.9, 0.3, 0.1]
    kept = filter_proposals(boxes, scores, nms_iou=0.5)
    # Box 1 (best) suppresses boxes 0 and 3 (IoU 0.68 and 0.62); box 2 is far away.
    assert kept == [boxes[1], boxes[2]]
    # A looser threshold keeps everything, best first.
    assert filter_proposals(boxes, scores, nms_iou=0.95) == [boxes[1], boxes[0], boxes[2],
                                                             boxes[3]]


def test_nms_threshold_is_strict_greater():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 10, 10)  # IoU = 50 / 150 = 1/3
    assert a.iou(b) == pytest.approx(1 / 3)
    assert len(filter_proposals([a, b], [1, 0.5], nms_iou=0.34)) == 2
    assert len(filter_proposals([a, b], [1, 0.5], nms_iou=0.33)) == 1


def test_min_size_drops_small_and_degenerate_boxes():
    boxes = [[0, 0, 4, 100], [0, 0, 100, 4], [0, 0, 8, 8], [0, 0, 0, 10],
             [0, 0, float('nan'), 5]]
    kept = filter_proposals(boxes, min_size=5)
    assert [b.to_list() for b in kept] == [[0, 0, 8, 8]]
    # min_size 0 still drops empty and non-finite boxes.
    assert len(filter_proposals(boxes)) == 3


def test_top_k_by_score_and_input_order_without_scores():
    boxes = [Box(i * 20, 0, 10, 10) for i in range(6)]
    scores = [0.1, 0.7, 0.3, 0.9, 0.2, 0.8]
    assert filter_proposals(boxes, scores, top_k=3) == [boxes[3], boxes[5], boxes[1]]
    assert filter_proposals(boxes, top_k=2) == boxes[:2]
    assert filter_proposals(boxes, scores, top_k=0) == []
    idx = filter_proposal_indices(boxes, scores, top_k=4)
    assert list(idx) == [3, 5, 1, 2]


def test_filter_combined_order_min_size_then_nms_then_top_k():
    # The best-scoring box is too small; it must not suppress anything.
    boxes = [Box(0, 0, 3, 3), Box(0, 0, 10, 10), Box(1, 0, 10, 10), Box(40, 0, 10, 10),
             Box(80, 0, 10, 10)]
    scores = [1.0, 0.9, 0.8, 0.7, 0.6]
    kept = filter_proposals(boxes, scores, nms_iou=0.5, min_size=5, top_k=2)
    assert kept == [boxes[1], boxes[3]]


def test_filter_accepts_lists_and_rejects_mismatched_scores():
    kept = filter_proposals([[0, 0, 10, 10], [100, 0, 10, 10]], [0.2, 0.4])
    assert all(isinstance(b, Box) for b in kept)
    assert kept[0].to_list() == [100, 0, 10, 10]
    assert filter_proposals([]) == []
    with pytest.raises(ValueError, match='2 boxes but 3 scores'):
        filter_proposals([[0, 0, 1, 1], [2, 2, 1, 1]], [1, 2, 3])
    with pytest.raises(ValueError, match='4 numbers'):
        filter_proposals([[0, 0, 1]])


def test_nms_indices_respects_given_order():
    xyxy = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    assert list(nms_indices(xyxy, np.array([1, 0, 2]), 0.5)) == [1, 2]
    assert list(nms_indices(xyxy, np.array([2]), 0.5)) == [2]


# -- GivenBoxes ------------------------------------------------------------------------------


def test_given_boxes_are_returned_untouched():
    boxes = [Box(5, 5, 10, 10), Box(5, 5, 10, 10), Box(0, 0, 2, 2), Box(-10, 300, 50, 50)]
    source = GivenBoxes(boxes)
    assert isinstance(source, ProposalSource)
    out = source.propose(np.zeros((20, 20, 3), np.uint8))
    assert out == boxes  # duplicates, tiny and out-of-image boxes, order: all kept
    assert out is not source.propose(np.zeros((20, 20, 3), np.uint8))  # a fresh list


def test_given_boxes_from_lists_and_optional_filtering():
    source = GivenBoxes([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 2, 2]], nms_iou=0.5,
                        min_size=4)
    assert [b.to_list() for b in source.propose(np.zeros((4, 4, 3), np.uint8))] == \
        [[0, 0, 10, 10]]
    with pytest.raises(ValueError, match='positive width'):
        GivenBoxes([[0, 0, -1, 5]])


# -- DetectorProposals: OWLv2 ----------------------------------------------------------------


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_owlv2_proposals_inside_image_and_at_most_top_k(tiny_owlv2_dir):
    det = DetectorProposals(tiny_owlv2_dir, device='cpu', score_threshold=0.0, min_size=0,
                            top_k=5)
    assert isinstance(det, ProposalSource)
    assert det.name == tiny_owlv2_dir
    for height, width in ((48, 120), (90, 30), (64, 64)):
        boxes, scores = det.propose_with_scores(_image(height, width))
        assert 0 < len(boxes) <= 5
        assert list(scores) == sorted(scores, reverse=True)
        for b in boxes:
            assert 0 <= b.x and b.x2 <= width + 1e-6
            assert 0 <= b.y and b.y2 <= height + 1e-6
    det.close()


def test_owlv2_threshold_can_leave_no_proposals(tiny_owlv2_dir):
    det = DetectorProposals(tiny_owlv2_dir, device='cpu', score_threshold=1.01)
    assert det.propose(_image(40, 50)) == []


@pytest.fixture(scope='module')
def grid_owlv2_dir(tiny_owlv2_dir, tmp_path_factory):
    """The tiny OWLv2 with box and objectness heads zeroed.

    Every patch then predicts the box of its grid cell (centre at the cell's corner
    coordinate (i + 1) / 8, size 1/8 of the square input) with the same objectness.
    """
    from transformers import Owlv2ForObjectDetection
    model = Owlv2ForObjectDetection.from_pretrained(tiny_owlv2_dir)
    with torch.no_grad():
        for head in (model.box_head, model.objectness_head):
            head.dense2.weight.zero_()
            head.dense2.bias.zero_()
    out = tmp_path_factory.mktemp('grid_owlv2')
    model.save_pretrained(str(out))
    for src in Path(tiny_owlv2_dir).iterdir():
        if src.suffix == '.json' and src.name != 'config.json':
            shutil.copy(src, out / src.name)
    return str(out)


def test_owlv2_boxes_are_mapped_through_the_square_padding(grid_owlv2_dir):
    det = DetectorProposals(grid_owlv2_dir, device='cpu', score_threshold=0.0, min_size=0,
                            top_k=None, nms_iou=None)
    height, width = 40, 100  # padded to a 100 x 100 square
    boxes, scores = det.propose_with_scores(_image(height, width))
    assert np.allclose(scores, 0.5)  # sigmoid(0)
    cell = max(height, width) / 8  # 12.5 px in both directions (not 40 / 8 vertically)
    interior = [b for b in boxes if b.x2 < width - 1e-3 and b.y2 < height - 1e-3]
    assert interior
    for b in interior:
        assert b.width == pytest.approx(cell, abs=0.05)
        assert b.height == pytest.approx(cell, abs=0.05)
    # Centres sit on the grid of the square: multiples of 12.5 px.
    centres_y = sorted({round(b.center[1], 1) for b in interior})
    assert centres_y == pytest.approx([12.5, 25.0])
    # Cells predicted in the padding below the image are clipped away entirely.
    assert all(b.y < height for b in boxes)
    assert max(b.y2 for b in boxes) == pytest.approx(height)
    # A tall image pads to the right instead.
    tall = det.propose(_image(100, 40))
    assert max(b.x2 for b in tall) == pytest.approx(40)
    assert max(b.y2 for b in tall) > 99


def test_owlv2_nms_and_min_size_apply_in_original_pixels(grid_owlv2_dir):
    det = DetectorProposals(grid_owlv2_dir, device='cpu', score_threshold=0.0, min_size=10,
                            top_k=None, nms_iou=0.3)
    boxes = det.propose(_image(40, 100))
    assert boxes
    assert all(b.width >= 10 and b.height >= 10 for b in boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a.iou(b) <= 0.3


# -- DetectorProposals: any AutoModelForObjectDetection --------------------------------------


@pytest.fixture(scope='module')
def centred_detr_dir(tmp_path_factory):
    """A tiny DETR whose box head always predicts the centred box of half the image size."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil
    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                            layer_type='basic', out_features=['stage2'])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone,
                        use_pretrained_backbone=False, d_model=16, encoder_layers=1,
                        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=6, num_labels=3)
    model = DetrForObjectDetection(config).eval()
    with torch.no_grad():
        last = model.bbox_predictor.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
    out = tmp_path_factory.mktemp('tiny_detr')
    model.save_pretrained(str(out))
    DetrImageProcessorPil(size={'shortest_edge': 64, 'longest_edge': 96}).save_pretrained(
        str(out))
    return str(out)


def test_generic_detector_boxes_in_original_pixels(centred_detr_dir):
    det = DetectorProposals(centred_detr_dir, device='cpu', score_threshold=0.0, min_size=0,
                            top_k=None, nms_iou=None)
    boxes, scores = det.propose_with_scores(_image(40, 100))
    assert len(boxes) == 6  # one per query, whatever class it predicts
    for b in boxes:
        assert b.to_list() == pytest.approx([25, 10, 50, 20], abs=0.01)
    assert np.all((scores >= 0) & (scores <= 1))
    # NMS merges the identical boxes; top_k bounds the count.
    assert len(DetectorProposals(centred_detr_dir, device='cpu', score_threshold=0.0,
                                 nms_iou=0.5).propose(_image(40, 100))) == 1


# -- loading errors --------------------------------------------------------------------------


def test_missing_detector_names_model_and_remedy(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        DetectorProposals('no-such-org/no-such-detector', device='cpu')
    message = str(err.value)
    assert 'no-such-org/no-such-detector' in message
    assert 'download' in message
    missing_dir = str(tmp_path / 'absent')
    with pytest.raises(ModelLoadError, match='there is no directory'):
        DetectorProposals(missing_dir, device='cpu')


def test_non_detector_checkpoint_is_rejected(tiny_clip_dir):
    with pytest.raises(ModelLoadError, match='not an object detector'):
        DetectorProposals(tiny_clip_dir, device='cpu')


def test_pickle_weights_are_refused(tiny_owlv2_dir, tmp_path):
    from transformers import Owlv2ForObjectDetection
    model = Owlv2ForObjectDetection.from_pretrained(tiny_owlv2_dir)
    for src in Path(tiny_owlv2_dir).iterdir():
        if src.suffix == '.json':
            shutil.copy(src, tmp_path / src.name)
    torch.save(model.state_dict(), tmp_path / 'pytorch_model.bin')  # pickle, no safetensors
    with pytest.raises(ModelLoadError, match='safetensors'):
        DetectorProposals(str(tmp_path), device='cpu')


def test_bad_image_raises_value_error(tiny_owlv2_dir):
    det = DetectorProposals(tiny_owlv2_dir, device='cpu')
    with pytest.raises(ValueError, match='HxWx3'):
        det.propose(np.zeros((4, 4, 2), np.uint8))


# -- DetectorProposals: OWL-ViT v1 (no objectness head) --------------------------------------


@pytest.fixture(scope='module')
def grid_owlvit_dir(tmp_path_factory):
    """A tiny OWL-ViT v1 with a zeroed box head (each patch predicts its grid cell)."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    from reclip_ros.tools.random_models import build_clip_tokenizer
    out = tmp_path_factory.mktemp('tiny_owlvit')
    tokenizer = build_clip_tokenizer(out)
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(str(out))
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=64, patch_size=8)
    torch.manual_seed(0)
    model = OwlViTForObjectDetection(
        OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(str(out))
    (out / 'preprocessor_config.json').write_text(json.dumps({
        'image_processor_type': 'OwlViTImageProcessor', 'size': {'height': 64, 'width': 64},
        'image_mean': [0.48145466, 0.4578275, 0.40821073],
        'image_std': [0.26862954, 0.26130258, 0.27577711]}))
    return str(out)


def test_owlvit_v1_generic_query_boxes_stretch_per_axis(grid_owlvit_dir):
    det = DetectorProposals(grid_owlvit_dir, device='cpu', score_threshold=0.0, min_size=0,
                            top_k=None, nms_iou=None)
    height, width = 40, 96  # stretched (not padded) to the square input
    boxes, scores = det.propose_with_scores(_image(height, width))
    assert len(boxes) > 0
    assert np.all((scores >= 0) & (scores <= 1))
    interior = [b for b in boxes if b.x2 < width - 1e-3 and b.y2 < height - 1e-3]
    assert interior
    for b in interior:
        assert b.width == pytest.approx(width / 8, abs=0.05)
        assert b.height == pytest.approx(height / 8, abs=0.05)
    assert max(b.y2 for b in boxes) == pytest.approx(height, abs=0.05)
