"""Run every benchmark and print one table of ratios measured in the same process.

    python benchmarks/run.py            # all benchmarks, full sizes
    python benchmarks/run.py --quick    # smaller sizes (a smoke test)
    python benchmarks/run.py --write    # also write benchmarks/RESULTS.md and results.json
    python benchmarks/run.py --skip accuracy --write   # keep accuracy's rows from results.json

Each ``benchmarks/bench_*.py`` exposes ``run(quick: bool) -> list[dict]`` with the keys of
``COLUMNS``; ``ratio`` is stated so that the target reads directly (a speed-up, or a cost ratio).
Every row records the benchmark file it came from and when it was measured: ``--write`` after
``--only``/``--skip`` keeps the rows of the benchmarks it did not run, with their own dates.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("benchmark", "baseline", "candidate_s", "baseline_s", "ratio", "target", "ok", "note")
RESULTS_JSON = HERE / "results.json"


def machine() -> dict[str, str]:
    """The date, the machine and the versions the numbers were measured with."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def load(path: Path):
    """The benchmark module at ``path``."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown(rows: list[dict], info: dict[str, str]) -> str:
    """The rows as RESULTS.md: a Markdown table under the machine's description."""
    lines = [
        "# Benchmark results",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ]
    lines += [
        "| benchmark | baseline | candidate (s) | baseline (s) | ratio | target | ok | note | measured |",
        "|---" * 9 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['baseline']} | {r['candidate_s']:.4g} | {r['baseline_s']:.4g} | "
            f"{r['ratio']:.3g} | {r['target']} | {'yes' if r['ok'] else 'NO'} | {r['note']} | "
            f"{r.get('measured', '')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the benchmarks the command line selects; print (and with ``--write`` save) the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md and results.json")
    parser.add_argument("--only", help="run only bench_<ONLY>.py")
    parser.add_argument("--skip", action="append", default=[], help="do not run bench_<SKIP>.py")
    args = parser.parse_args()
    info = machine()
    rows: list[dict] = []
    ran: set[str] = set()
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if (args.only and name != args.only) or name in args.skip:
            continue
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        ran.add(name)
        for row in load(path).run(quick=args.quick):
            rows.append({**row, "source": name, "measured": info["date"]})
    if args.write:
        kept = [r for r in previous_rows() if r.get("source") not in ran]
        text = markdown(rows + kept, info)
        notes = HERE / "notes.md"  # hand-written context, kept across runs
        if notes.is_file():
            text += "\n" + notes.read_text()
        (HERE / "RESULTS.md").write_text(
            text + "\nMade by `python benchmarks/run.py --write`; rows not rerun keep their date.\n"
        )
        RESULTS_JSON.write_text(
            json.dumps({"machine": info, "rows": rows + kept}, indent=2, default=str) + "\n"
        )
    print(markdown(rows, info))
    return 0 if all(r["ok"] for r in rows) else 1


def previous_rows() -> list[dict]:
    """The rows of the last ``--write`` (none when there was none)."""
    if not RESULTS_JSON.is_file():
        return []
    return json.loads(RESULTS_JSON.read_text())["rows"]


if __name__ == "__main__":
    sys.exit(main())
