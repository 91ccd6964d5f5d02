"""Models drawn by the port fuzzer, kept in tests/fixtures/fuzz (make_fuzz_fixtures.py, real Keras), judged
as benchmarks/port_fuzz.py judges them: `port`, `convert --model <the port>` and `convert` on every file of
each, never wrong with exit 0, never a crash or a genuine file rejected, every refusal naming what it refuses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.port_fuzzing import FAILURES, judge_model

pytest.importorskip("torch")
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "fuzz"
CASES = sorted(p for p in CORPUS.iterdir() if (p / "case.json").exists()) if CORPUS.exists() else []


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 1


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_fuzz_model_ports_and_converts(case: Path, tmp_path: Path) -> None:
    why = json.loads((case / "case.json").read_text()).get("why", "")
    results = judge_model(case, argparse.Namespace(timeout=120, rtol=1e-4), out_root=tmp_path)
    bad = [
        f"{r['format']} {r['tool']}: {r['verdict']} {r.get('message', '')}" for r in results if r["verdict"] in FAILURES
    ]
    assert not bad, f"{why}: {bad}"
    assert any(r["tool"] == "port" and r["verdict"] == "exact" for r in results), why
