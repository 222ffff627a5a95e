"""The machine block of the benchmarks, checked against lscpu and getconf."""

import subprocess

from reclip_ros.tools.machine import VECTOR_FLAGS, describe_machine, machine_line


def _lscpu() -> dict:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(':') for line in
                                                  out.splitlines())}


def test_flags_and_model_are_lscpus():
    lscpu = _lscpu()
    machine = describe_machine(3)
    assert machine['vector_flags'] == [f for f in VECTOR_FLAGS if f in lscpu['Flags'].split()]
    assert machine['cpu_model'] == lscpu['Model name']
    assert machine['torch_threads'] == 3


def test_cores_are_the_online_processors():
    online = subprocess.run(['getconf', '_NPROCESSORS_ONLN'], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert describe_machine()['cores'] == int(online)


def test_the_line_names_model_flags_cores_and_load():
    line = machine_line({'cpu_model': 'Some CPU', 'vector_flags': ['avx2', 'avx512_vnni'],
                         'cores': 2, 'load_average': [0.5, 0.25, 0.1]})
    assert line == ('machine: Some CPU; flags: avx2 avx512_vnni; 2 cores; '
                    'load average 0.5, 0.25, 0.1')
