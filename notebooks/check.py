"""Runs every notebook in this folder on freshly simulated reports and checks what it produced.

Used by scripts/test.sh: `python notebooks/check.py HYSCALE_BINARY`. Prints one line per check and a closing
'N passed, N failed' line; exits non-zero on any failure.
"""

import os
import subprocess
import sys
import tempfile

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCENARIOS = ["conv_static", "conv_function_only", "code_spot", "poisson_gpu_batching"]


def check_reports(text: str, figures: list) -> None:
    missing = [s for s in ["conv-static", "conv-function-only", "code-spot"] if s not in text]
    assert not missing, f"summary lacks {missing}"
    assert "cost_vs_slo.png" in figures, f"no cost_vs_slo.png among {figures}"
    assert sum(f.startswith("timeline_") for f in figures) == len(SCENARIOS), figures


def check_fidelity(text: str, figures: list) -> None:
    assert "p99_ms" in text and "static" in text and "function-only" in text, f"table lacks its rows: {text[:500]}"
    assert "fidelity.png" in figures, f"no fidelity.png among {figures}"


def check_traces(text: str, figures: list) -> None:
    assert "conv:" in text and "code:" in text and "peak/mean" in text, f"summary lacks the traces: {text[:500]}"
    assert "traces.png" in figures, f"no traces.png among {figures}"


def check_keepalive(text: str, figures: list) -> None:
    assert "fixed-10min" in text and "hybrid" in text, f"table lacks its rows: {text[:500]}"
    assert "keepalive.png" in figures, f"no keepalive.png among {figures}"


def check_sweep(text: str, figures: list) -> None:
    assert "cells:" in text and "mark" in text and "static" in text, f"table lacks its rows: {text[:500]}"
    assert "sweep.png" in figures, f"no sweep.png among {figures}"


# What each notebook must produce; a notebook without an entry fails the check.
CHECKS = {
    "reports.ipynb": check_reports,
    "keepalive.ipynb": check_keepalive,
    "fidelity.ipynb": check_fidelity,
    "traces.ipynb": check_traces,
    "sweep.ipynb": check_sweep,
}


def main() -> int:
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in SCENARIOS:
            out = os.path.join(tmp, f"{name}.json")
            subprocess.run(
                [binary, "simulate", "--scenario", os.path.join(ROOT, "scenarios", f"{name}.toml"), "--out", out],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        keepalive = os.path.join(tmp, "keepalive", "keepalive.json")
        subprocess.run(
            [binary, "keepalive", "--scenario", os.path.join(ROOT, "scenarios", "azf_keepalive.toml"), "--minutes", "10", "--table", keepalive],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A short fidelity run: the simulator and the live cluster (real sandboxes, real workers) on 10 s.
        fidelity = os.path.join(tmp, "fidelity")
        subprocess.run(
            [binary, "fidelity", "--trace", os.path.join(ROOT, "traces", "data", "azure_llm_2023", "AzureLLMInferenceTrace_conv.csv"),
             "--policy", "static,function-only", "--duration-s", "10", "--calibration-requests", "20",
             "--config", os.path.join(ROOT, "live", "fidelity.toml"), "--out", fidelity],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.environ["HYSCALE_FIDELITY"] = os.path.join(fidelity, "fidelity.json")
        # The two Azure LLM traces, through `hyscale trace convert` and `hyscale trace stats`.
        traces = os.path.join(tmp, "traces")
        os.makedirs(traces)
        for name in ["conv", "code"]:
            source = os.path.join(ROOT, "traces", "data", "azure_llm_2023", f"AzureLLMInferenceTrace_{name}.csv")
            subprocess.run([binary, "trace", "convert", source, "--out", os.path.join(traces, f"{name}.csv")],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(traces, f"{name}.stats.json"), "w") as f:
                subprocess.run([binary, "trace", "stats", source, "--json"], check=True, stdout=f,
                               stderr=subprocess.DEVNULL)
        # A small sweep (two policies, two seeds, a short trace) through `hyscale sweep`.
        grid = os.path.join(tmp, "grid.toml")
        with open(grid, "w") as f:
            f.write(f'scenarios = ["{os.path.join(ROOT, "scenarios", "conv4x_compare.toml")}"]\n'
                    'policies = ["static", "mark"]\nseeds = [1, 2]\ntraces = ["poisson:10:120"]\n')
        sweep = os.path.join(tmp, "sweep")
        subprocess.run([binary, "sweep", grid, "--out", sweep], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        os.environ["HYSCALE_SWEEP"] = os.path.join(sweep, "sweep.csv")
        os.environ["HYSCALE_TRACES"] = traces
        os.environ["HYSCALE_REPORTS"] = tmp
        os.environ["HYSCALE_KEEPALIVE"] = keepalive
        os.environ["HYSCALE_FIGURES"] = os.path.join(tmp, "figures")
        for nb_name in sorted(f for f in os.listdir(HERE) if f.endswith(".ipynb")):
            nb = nbformat.read(os.path.join(HERE, nb_name), as_version=4)
            try:
                NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": HERE}}).execute()
                text = "".join(
                    o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                )
                CHECKS[nb_name](text, os.listdir(os.environ["HYSCALE_FIGURES"]))
                print(f"ok: {nb_name}")
                passed += 1
            except Exception as e:  # report every notebook, then fail
                print(f"FAILED: {nb_name}: {e}")
                failed += 1
    print(f"notebooks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
