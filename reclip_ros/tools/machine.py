"""The machine a measurement ran on: CPU model, the vector extensions that matter, cores, load.

Every figure the benchmarks print names its machine with this block (``reclip bench``'s
report has it as ``machine``), because the CPUs of this project's machines differ (some
AVX2 only, some AVX-512 with VNNI) and their timings with them.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Dict, List, Optional

#: CPU flags that change the speed of fp32 / int8 / bf16 kernels (oneDNN, ONNX Runtime).
VECTOR_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni',
                'avx512_bf16', 'amx_tile', 'amx_int8', 'amx_bf16')


def _cpuinfo(path: Path = Path('/proc/cpuinfo')) -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: Dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(':')
        fields.setdefault(key.strip(), value.strip())
    return fields


def describe_machine(torch_threads: Optional[int] = None) -> Dict[str, object]:
    """CPU model, vector flags, cores, load averages and torch threads of this machine."""
    info = _cpuinfo()
    flags: List[str] = [f for f in VECTOR_FLAGS if f in info.get('flags', '').split()]
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = []
    machine: Dict[str, object] = {
        'cpu_model': info.get('model name', platform.processor() or 'unknown'),
        'vector_flags': flags,
        'cores': os.cpu_count(),
        'load_average': load,
        'platform': platform.platform(),
    }
    if torch_threads is not None:
        machine['torch_threads'] = int(torch_threads)
    return machine


def machine_line(machine: Dict[str, object]) -> str:
    """One line naming the machine, for the head of a printed table."""
    flags = ' '.join(machine.get('vector_flags') or []) or 'none of ' + '/'.join(VECTOR_FLAGS[:3])
    load = ', '.join(str(v) for v in machine.get('load_average') or []) or 'unknown'
    return (f"machine: {machine.get('cpu_model')}; flags: {flags}; "
            f"{machine.get('cores')} cores; load average {load}")
