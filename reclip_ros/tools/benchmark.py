"""Per-stage latency of region scoring on a synthetic frame (the ``reclip bench`` command).

For each number of proposals N, every repeat uses a fresh synthetic 640x480 frame with N
random boxes and empty caches, and measures:

- **cold**: the first expression on the frame (blur + isolation + one batched image pass
  per model + one text encoding + matrix products);
- **second**: another expression on the same frame (frame cache hit: text encoding and a
  matrix product only);
- **relational**: "the red mug to the left of the laptop near the book" on the same frame,
  through the :class:`~reclip_ros.core.grounder.Grounder` with the boxes given (parse, the
  noun-chunk and full-expression texts, the spatial resolver); when the grounder cannot be
  built (spaCy model or resolver missing) its scorer calls are emulated: full expression +
  3 noun chunks;
- **floor**: one bare batched forward pass per model over the 2N isolated images (already
  preprocessed): the compute that no implementation can avoid.

With a precision other than fp32 the candidate rankings are compared with fp32 copies of the
same models (top-1 agreement, Spearman and Kendall rank correlation of the logits), and the
fp32 copies' floor is measured on the same frames (``fp32_floor_ms``, ``cold_over_fp32_floor``):
the number a lower precision has to beat.

With ``detectors``, each detector's per-frame proposal time is measured at its native input
size on the same synthetic frames (``detector_results``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.config import DEFAULT_MODELS
from reclip_ros.core.types import Box

RELATIONAL_EXPRESSION = 'the red mug to the left of the laptop near the book'
RELATIONAL_CHUNKS = ('the red mug', 'the laptop', 'the book')
FIRST_EXPRESSION = 'the blue bowl'
SECOND_EXPRESSION = 'the green bottle behind the plate'
RANKING_EXPRESSIONS = ('the red mug', 'the laptop', 'the book', 'the blue bowl',
                       'the small green bottle', 'a person holding a phone')


@dataclass
class BenchConfig:
    """What to measure.

    Attributes:
        models: model ids / directories (ignored when *random_init* is set).
        random_init: '' or a random-weight preset ('tiny', 'vit-b-32').
        random_dir: where random models are saved (reused when present); '' = temporary.
        proposals: numbers of boxes N to measure.
        repeats: timed repeats per N (median reported), after one warm-up.
        precision: 'auto', 'fp32', 'fp16', 'bf16' or 'int8'.
        device: 'auto', 'cpu', 'cuda', 'cuda:N'.
        batch_size: images per forward pass in the scorer.
        threads: torch intra-op threads (0 = torch's default).
        seed: seed of the synthetic frames and boxes.
        width, height: synthetic frame size.
        ranking_frames: frames used to compare rankings with fp32 (precision != fp32).
        detectors: detector ids / directories whose per-frame time is measured.
        random_detectors: also measure random-weight copies of the default detectors'
            architectures (works offline; the weights do not change the time).
        allow_download: download models missing from the local cache (default: never).
    """

    models: Tuple[str, ...] = DEFAULT_MODELS
    allow_download: bool = False
    random_init: str = ''
    random_dir: str = ''
    proposals: Tuple[int, ...] = (10, 20, 40)
    repeats: int = 3
    precision: str = 'fp32'
    device: str = 'auto'
    batch_size: int = 32
    threads: int = 0
    seed: int = 0
    width: int = 640
    height: int = 480
    ranking_frames: int = 3
    use_grounder: bool = True
    detectors: Tuple[str, ...] = ()
    random_detectors: bool = False
    extra: Dict[str, str] = field(default_factory=dict)


def synthetic_frame(width: int, height: int, seed: int) -> np.ndarray:
    """A seeded RGB frame: coloured rectangles and ellipses on a textured background."""
    import cv2

    rng = np.random.default_rng(seed)
    grid = rng.integers(60, 200, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        w, h = int(rng.integers(20, 160)), int(rng.integers(20, 120))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + w, y + h), colour, thickness=-1)
        else:
            cv2.ellipse(image, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, colour,
                        thickness=-1)
    noise = rng.integers(-8, 9, size=image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def random_boxes(n: int, width: int, height: int, seed: int) -> List[Box]:
    """*n* seeded random boxes, 16 to 240 pixels wide/high, inside the frame."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        w = float(rng.uniform(16, min(240, width)))
        h = float(rng.uniform(16, min(240, height)))
        x = float(rng.uniform(0, width - w))
        y = float(rng.uniform(0, height - h))
        boxes.append(Box(x, y, w, h))
    return boxes


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no tie correction; ties are improbable for logits)."""
    if len(a) < 2:
        return 1.0
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 1.0


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a: (concordant - discordant) pairs over all pairs."""
    n = len(a)
    if n < 2:
        return 1.0
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(n, k=1)
    return float((da[upper] * db[upper]).sum() / len(upper[0]))


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float('nan')


class _Stopwatch:
    """Wall-clock and process CPU time (all threads) since construction, in ms."""

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def read(self) -> Tuple[float, float]:
        return ((time.perf_counter() - self.wall) * 1000.0,
                (time.process_time() - self.cpu) * 1000.0)


def _load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not available on this platform
        return None


def prepare_models(config: BenchConfig, log: Callable[[str], None]) -> Tuple[list, str]:
    """Load the models (saving random-weight ones first when asked); return (models, names)."""
    from reclip_ros.core.models import ClipModel
    from reclip_ros.tools.random_models import save_random_clip

    names = list(config.models)
    if config.random_init:
        base = Path(config.random_dir or tempfile.mkdtemp(prefix='reclip_bench_'))
        target = base / f'random-{config.random_init}-seed{config.seed}'
        if not (target / 'config.json').is_file():
            log(f'saving a random-weight {config.random_init} CLIP to {target} ...')
            save_random_clip(target, preset=config.random_init, seed=config.seed)
        names = [str(target)]
    models = [ClipModel.load(n, device=config.device, precision=config.precision,
                             allow_download=config.allow_download) for n in names]
    return models, names


def _make_grounder(scorer, log: Callable[[str], None]):
    """A Grounder around *scorer*, or (None, why) when its parts cannot be built."""
    try:
        from reclip_ros.core.grounder import Grounder
        from reclip_ros.core.language.parsing import ExpressionParser
        return Grounder(scorer, ExpressionParser()), ''
    except Exception as exc:  # noqa: BLE001 - missing spaCy model or module: emulate
        log(f'grounder unavailable ({type(exc).__name__}: {exc}); emulating its scorer calls')
        return None, f'{type(exc).__name__}: {exc}'


def _floor_ms(scorer, image: np.ndarray, boxes: Sequence[Box]) -> Tuple[float, float]:
    """(wall, CPU) ms of one bare batched forward pass per model over every isolated image."""
    from reclip_ros.core.isolation import to_model_input

    isolated = scorer.isolated_images(image, boxes)
    flat = [im for m in scorer.methods for im in isolated[m]]
    wall = cpu = 0.0
    for model in scorer.models:
        batch = to_model_input(flat, model.image_size, model.image_mean, model.image_std)
        watch = _Stopwatch()
        model.encode_images(batch)
        w, c = watch.read()
        wall, cpu = wall + w, cpu + c
    return wall, cpu


def _measure_once(scorer, grounder, image, boxes, key) -> dict:
    scorer.clear_caches()
    text_before = scorer.text_encoding_ms_total
    watch = _Stopwatch()
    frame = scorer.encode_frame(image, boxes, frame_key=key)
    scorer.logits(frame, FIRST_EXPRESSION)
    cold, cold_cpu = watch.read()
    cold_text = scorer.text_encoding_ms_total - text_before

    watch = _Stopwatch()
    frame2 = scorer.encode_frame(image, boxes, frame_key=key)
    scorer.logits(frame2, SECOND_EXPRESSION)
    second, second_cpu = watch.read()
    if not frame2.from_cache:
        raise RuntimeError('frame cache missed on the second expression')

    watch = _Stopwatch()
    if grounder is not None:
        result = grounder.ground(image, RELATIONAL_EXPRESSION, boxes=boxes, frame_key=key)
        if not result.ok:
            raise RuntimeError(f'grounding failed: {result.status.name} {result.message}')
    else:
        frame3 = scorer.encode_frame(image, boxes, frame_key=key)
        for text in (RELATIONAL_EXPRESSION,) + RELATIONAL_CHUNKS:
            scorer.logits(frame3, text)
    relational, relational_cpu = watch.read()
    return {'cold_ms': cold, 'isolation_ms': frame.isolation_ms,
            'image_encoding_ms': frame.image_encoding_ms, 'cold_text_ms': cold_text,
            'second_ms': second, 'relational_ms': relational,
            'cold_cpu_ms': cold_cpu, 'second_cpu_ms': second_cpu,
            'relational_cpu_ms': relational_cpu}


def measure_latency(scorer, grounder, n: int, config: BenchConfig,
                    reference=None) -> dict:
    """Median per-stage latencies (ms) for *n* proposals over ``config.repeats`` frames.

    Wall-clock and process CPU times are both reported: on a machine shared with other
    work the CPU time is the stable measure. The floor is measured on the same frame as the
    cold pass, alternately before and after it; ratios are medians of per-frame ratios.
    With a *reference* scorer (fp32 copies of the models) its floor is measured too.
    """
    runs = []
    for repeat in range(-1, config.repeats):  # repeat -1 is the warm-up
        seed = config.seed * 1000 + n * 10 + repeat + 1
        image = synthetic_frame(config.width, config.height, seed)
        boxes = random_boxes(n, config.width, config.height, seed)
        floor_first = repeat % 2 == 0
        floor = _floor_ms(scorer, image, boxes) if floor_first else (0.0, 0.0)
        run = _measure_once(scorer, grounder, image, boxes, key=('bench', n, repeat))
        if not floor_first:
            floor = _floor_ms(scorer, image, boxes)
        run['floor_ms'], run['floor_cpu_ms'] = floor
        if reference is not None:
            run['fp32_floor_ms'], run['fp32_floor_cpu_ms'] = _floor_ms(reference, image, boxes)
        if repeat >= 0:
            runs.append(run)
    out = {'proposals': n, 'images_per_model': n * len(scorer.methods)}
    for key in runs[0]:
        out[key] = _median([r[key] for r in runs])
    for suffix in ('ms', 'cpu_ms'):
        tag = '' if suffix == 'ms' else '_cpu'
        out[f'cold_over_floor{tag}'] = _median(
            [r[f'cold_{suffix}'] / r[f'floor_{suffix}'] for r in runs])
        out[f'cold_over_second{tag}'] = _median(
            [r[f'cold_{suffix}'] / max(r[f'second_{suffix}'], 1e-6) for r in runs])
        if reference is not None:
            out[f'cold_over_fp32_floor{tag}'] = _median(
                [r[f'cold_{suffix}'] / r[f'fp32_floor_{suffix}'] for r in runs])
    return out


def is_fp32(models: Sequence) -> bool:
    """True when every model computes in plain fp32 (not int8-quantised)."""
    import torch
    return all(m.dtype == torch.float32 and not getattr(m, 'quantized', False)
               for m in models)


def precision_label(models: Sequence) -> str:
    """'int8' for quantised models, otherwise the weights' dtype ('float32', ...)."""
    first = models[0]
    return 'int8' if getattr(first, 'quantized', False) else \
        str(first.dtype).replace('torch.', '')


def compare_rankings(models: list, reference: list, config: BenchConfig,
                     n: int) -> dict:
    """Agreement of rankings between *models* and fp32 *reference* copies."""
    from reclip_ros.core.region_scorer import RegionScorer

    low = RegionScorer(models, batch_size=config.batch_size)
    high = RegionScorer(reference, batch_size=config.batch_size)
    top1, rhos, taus, max_abs, margins = [], [], [], [], []
    for k in range(config.ranking_frames):
        seed = 777 + k
        image = synthetic_frame(config.width, config.height, seed)
        boxes = random_boxes(n, config.width, config.height, seed)
        f_low, f_high = low.encode_frame(image, boxes), high.encode_frame(image, boxes)
        for text in RANKING_EXPRESSIONS:
            a, b = low.logits(f_low, text), high.logits(f_high, text)
            top1.append(float(np.argmax(a) == np.argmax(b)))
            rhos.append(spearman(a, b))
            taus.append(kendall_tau(a, b))
            max_abs.append(float(np.max(np.abs(a - b))))
            ordered = np.sort(b)
            margins.append(float(ordered[-1] - ordered[-2]) if len(b) > 1 else float('inf'))
    low.close(unload_models=False)
    high.close(unload_models=False)
    return {'proposals': n, 'comparisons': len(top1),
            'top1_agreement': float(np.mean(top1)),
            'spearman_mean': float(np.mean(rhos)), 'spearman_min': float(np.min(rhos)),
            'kendall_mean': float(np.mean(taus)), 'kendall_min': float(np.min(taus)),
            'max_abs_logit_diff': float(np.max(max_abs)),
            # how close fp32's own first two boxes are: a top-1 that fp32 separates by less
            # than the precision's logit error can flip whatever the rounding
            'fp32_margin_median': float(np.median(margins)),
            'fp32_margin_min': float(np.min(margins))}


def run_benchmark(config: BenchConfig,
                  log: Optional[Callable[[str], None]] = None) -> dict:
    """Run the benchmark described by *config*; return a JSON-ready dict.

    Raises:
        ModelLoadError, DeviceError: as ``ClipModel.load``.
        ValueError: bad configuration.
    """
    import torch

    from reclip_ros.core.models import ClipModel
    from reclip_ros.core.region_scorer import RegionScorer

    log = log or (lambda message: None)
    if config.repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {config.repeats}')
    if not config.proposals or min(config.proposals) < 1:
        raise ValueError(f'proposal counts must be >= 1, got {config.proposals}')
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    temporary = ''
    if config.random_init and not config.random_dir:
        temporary = tempfile.mkdtemp(prefix='reclip_bench_')
        config = replace(config, random_dir=temporary)
    try:
        models, names = prepare_models(config, log)
    except Exception:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    scorer = RegionScorer(models, batch_size=config.batch_size)
    grounder, why = _make_grounder(scorer, log) if config.use_grounder else (None, 'disabled')
    from reclip_ros.tools.machine import describe_machine
    report = {
        'machine': describe_machine(torch.get_num_threads()),
        'config': asdict(config),
        'models': [m.describe() for m in models],
        'device': models[0].device,
        'dtype': precision_label(models),
        'torch_threads': torch.get_num_threads(),
        'load_average_at_start': _load_average(),
        'relational_via': 'Grounder.ground (boxes given)' if grounder is not None else
                          f'emulated: full expression + {len(RELATIONAL_CHUNKS)} noun chunks '
                          f'({why})',
        'results': [],
    }
    reference, reference_scorer = [], None
    try:
        if not is_fp32(models):
            reference = [ClipModel.load(n, device=config.device, precision='fp32',
                                        allow_download=config.allow_download) for n in names]
            reference_scorer = RegionScorer(reference, batch_size=config.batch_size)
        for n in config.proposals:
            log(f'measuring N={n} ...')
            report['results'].append(measure_latency(scorer, grounder, n, config,
                                                     reference_scorer))
        if reference:
            log('comparing rankings with fp32 ...')
            report['ranking_vs_fp32'] = [compare_rankings(models, reference, config, n)
                                         for n in config.proposals]
        detectors = list(config.detectors)
        if config.random_detectors:
            detectors += random_detector_dirs(config, log)
        if detectors:
            report['detector_results'] = [measure_detector(d, config, log) for d in detectors]
    finally:
        scorer.close()
        if reference_scorer is not None:
            reference_scorer.close()
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    return report


def random_detector_dirs(config: BenchConfig, log: Callable[[str], None]) -> List[str]:
    """Random-weight copies of each default detector architecture, saved under random_dir."""
    from reclip_ros.tools.random_models import OWL_PRESETS, save_random_owl

    base = Path(config.random_dir or tempfile.mkdtemp(prefix='reclip_bench_'))
    out = []
    for preset in OWL_PRESETS:
        target = base / f'random-{preset}-seed{config.seed}'
        if not (target / 'config.json').is_file():
            log(f'saving a random-weight {preset} detector to {target} ...')
            save_random_owl(target, preset=preset, seed=config.seed)
        out.append(str(target))
    return out


def measure_detector(name: str, config: BenchConfig, log: Callable[[str], None]) -> dict:
    """Median per-frame proposal time of detector *name* (at its native input size)."""
    from reclip_ros.core.proposals import DetectorProposals

    log(f'measuring detector {name} ...')
    detector = DetectorProposals(name, device=config.device, precision=config.precision,
                                 local_files_only=not config.allow_download)
    try:
        walls, cpus, counts = [], [], []
        for repeat in range(-1, config.repeats):
            image = synthetic_frame(config.width, config.height, 4242 + repeat)
            watch = _Stopwatch()
            boxes = detector.propose(image)
            wall, cpu = watch.read()
            if repeat >= 0:
                walls.append(wall)
                cpus.append(cpu)
                counts.append(len(boxes))
        return {'detector': name, 'model_type': detector.model_type,
                'input_size': detector.input_size, 'device': detector.device,
                'precision': 'int8' if detector.quantized else
                str(detector.dtype).replace('torch.', ''),
                'frame_ms': _median(walls), 'frame_cpu_ms': _median(cpus),
                'boxes': _median(counts)}
    finally:
        detector.close()


def format_table(report: dict) -> str:
    """The report as a fixed-width text table."""
    from reclip_ros.tools.machine import machine_line
    lines = [machine_line(report['machine'])] if 'machine' in report else []
    lines += [f"models: {', '.join(report['models'])}",
             f"device: {report['device']}  dtype: {report['dtype']}  "
             f"torch threads: {report['torch_threads']}  "
             f"repeats: {report['config']['repeats']} (median)  "
             f"load average: {report.get('load_average_at_start')}",
             f"relational expression: {report['relational_via']}", '']
    header = (f"{'N':>4} {'imgs':>5} {'clock':>5} {'cold ms':>9} {'floor ms':>9} "
              f"{'cold/floor':>10} {'2nd ms':>8} {'cold/2nd':>9} {'relat. ms':>10} "
              f"{'isolate':>8} {'img enc':>9} {'text':>7}")
    lines += [header, '-' * len(header)]
    for r in report['results']:
        for clock, tag in (('wall', ''), ('cpu', '_cpu')):
            lines.append(
                f"{r['proposals']:>4} {r['images_per_model']:>5} {clock:>5} "
                f"{r[f'cold{tag}_ms']:>9.1f} {r[f'floor{tag}_ms']:>9.1f} "
                f"{r[f'cold_over_floor{tag}']:>10.3f} {r[f'second{tag}_ms']:>8.2f} "
                f"{r[f'cold_over_second{tag}']:>9.1f} {r[f'relational{tag}_ms']:>10.2f}"
                + (f" {r['isolation_ms']:>8.1f} {r['image_encoding_ms']:>9.1f} "
                   f"{r['cold_text_ms']:>7.1f}" if not tag else ''))
    lines.append('(wall: elapsed time; cpu: process CPU time, all threads; isolate / img enc '
                 '/ text: wall time of the cold pass\'s stages)')
    if report['results'] and 'cold_over_fp32_floor' in report['results'][0]:
        lines += ['', f"{report['dtype']} against the fp32 floor (fp32 copies, same frames):"]
        for r in report['results']:
            lines.append(f"  N={r['proposals']}: cold {r['cold_ms']:.1f} ms, fp32 floor "
                         f"{r['fp32_floor_ms']:.1f} ms, cold/fp32 floor "
                         f"{r['cold_over_fp32_floor']:.3f} (CPU time: "
                         f"{r['cold_over_fp32_floor_cpu']:.3f})")
    for r in report.get('detector_results', []):
        if r is report['detector_results'][0]:
            lines += ['', 'detector per frame (native input size):']
        lines.append(f"  {r['detector']} ({r['model_type']}, {r['input_size']} px, "
                     f"{r['precision']}): {r['frame_ms']:.1f} ms wall, "
                     f"{r['frame_cpu_ms']:.1f} ms CPU, {r['boxes']:.0f} boxes")
    for r in report.get('ranking_vs_fp32', []):
        if r is report.get('ranking_vs_fp32', [])[0]:
            lines += ['', f"ranking vs fp32 ({report['dtype']}):"]
        lines.append(
            f"  N={r['proposals']}: top-1 agreement {r['top1_agreement']:.3f} over "
            f"{r['comparisons']} expressions, Spearman mean {r['spearman_mean']:.4f} "
            f"(min {r['spearman_min']:.4f}), Kendall mean {r['kendall_mean']:.4f} "
            f"(min {r['kendall_min']:.4f}), max |logit diff| {r['max_abs_logit_diff']:.3f}; "
            f"fp32 top-1 margin over the second box: median {r['fp32_margin_median']:.4f}, "
            f"min {r['fp32_margin_min']:.4f}")
    return '\n'.join(lines)
