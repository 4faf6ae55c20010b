"""Registry benchmark: how long `petpark models list` and `petpark --help` take, each in a fresh
process, next to a bare Python start (`python -c pass`) in the same run. Median of --repeat runs.

    .venv/bin/python benchmarks/registry_benchmark.py [--home petpark_home] [--repeat 3]

The home must hold a run that pushed (`make demo` makes one in petpark_home).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)


def seconds(command, env) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f'{" ".join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}')
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--home', default='petpark_home', help='a PETPARK_HOME with pushed versions')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    home = os.path.abspath(args.home)
    if not os.path.isfile(os.path.join(home, 'metadata.sqlite')):
        raise SystemExit(f'{home} has no metadata.sqlite: run `make demo` first or pass --home')
    env = dict(os.environ, PETPARK_HOME=home)
    petpark = os.path.join(BIN, 'petpark')
    commands = {'python -c pass': [sys.executable, '-c', 'pass'],
                'petpark --help': [petpark, '--help'],
                'petpark models list': [petpark, 'models', 'list'],
                'petpark models list --json': [petpark, 'models', 'list', '--json']}
    versions = subprocess.run([petpark, 'models', 'list'], env=env, capture_output=True, text=True).stdout
    print(f'Registry of {home}: {len(versions.splitlines()) - 1} pushed versions; median of {args.repeat} fresh processes')
    floor = None
    for name, command in commands.items():
        median = statistics.median(seconds(command, env) for _ in range(args.repeat))
        floor = median if floor is None else floor
        print(f'  {name:<28} {median:6.2f} s   ({median / floor:4.1f}x a bare Python start)')


if __name__ == '__main__':
    main()
