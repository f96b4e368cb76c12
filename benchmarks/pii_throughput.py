"""PII scrubbing throughput: tunegate's scrubber vs Presidio's AnalyzerEngine, same recognizers.

Both scrub the same 10,000 records of the deterministic PII test set (`tests/data/pii_testset.py`,
seed 5). The reference calls `AnalyzerEngine.analyze` one record at a time (the engine
`tasks.pii.build_analyzer` builds: blank spaCy pipeline + tunegate's recognizer registry) and
applies the same replacement; tunegate runs `scrub_many` (pre-filters, windowed phone lookup,
2 worker processes), which also runs the residual scan. Recall is measured for both on the gold
spans. Prints `pii_speedup: <x>` last.

    PYTHONPATH=. python benchmarks/pii_throughput.py [--records 10000] [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.pii import (  # noqa: E402
    PIISettings,
    build_analyzer,
    get_scrubber,
    replace_spans,
    scrub_many,
)
from tasks.pii.engine import _resolve_overlaps  # noqa: E402
from tests.data.pii_testset import build, score  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    records = build(seed=5, n_records=args.records)[: args.records]
    texts = [r.text for r in records]
    settings = PIISettings(processes=args.processes)
    engine = build_analyzer(settings)
    scrubber = get_scrubber(settings)
    entities = settings.entities
    print(f"records: {len(texts)}  cpu cores: {os.cpu_count()}  processes: {args.processes}")

    def presidio_detect(text: str) -> list:
        found = engine.analyze(
            text=text, language="en", entities=entities, score_threshold=settings.score_threshold
        )
        return _resolve_overlaps(found)

    presidio_detect(texts[0])  # warm both
    scrubber.analyze(texts[0])

    started = time.perf_counter()
    reference = [replace_spans(t, presidio_detect(t), settings)[0] for t in texts]
    reference_s = time.perf_counter() - started
    print(
        f"presidio AnalyzerEngine, one record per call: {reference_s:.1f} s "
        f"({len(texts) / reference_s:.0f} records/s)"
    )

    started = time.perf_counter()
    ours = scrub_many(texts, settings)
    ours_s = time.perf_counter() - started
    print(
        f"tunegate scrub_many (incl. residual scan): {ours_s:.1f} s "
        f"({len(texts) / ours_s:.0f} records/s)"
    )
    same = sum(a == b.text for a, b in zip(reference, ours, strict=True))
    print(f"identical scrubbed output: {same}/{len(texts)}")

    def spans(detect):  # noqa: ANN001, ANN202
        return lambda t: [(r.entity_type, r.start, r.end) for r in detect(t)]

    ref_score = score(records, spans(presidio_detect))
    our_score = score(records, spans(scrubber.analyze))
    print(f"{'entity':<24}{'support':>8}{'recall ref':>12}{'recall ours':>12}{'prec ours':>11}")
    for entity, support in ref_score["support"].items():
        print(
            f"{entity:<24}{support:>8}{ref_score['recall'][entity]:>12.4f}"
            f"{our_score['recall'][entity]:>12.4f}"
            f"{our_score['precision'].get(entity, float('nan')):>11.4f}"
        )
    worse = [e for e in ref_score["recall"] if our_score["recall"][e] < ref_score["recall"][e]]
    print(f"recall equal or better on every type: {not worse} {worse or ''}")
    print(f"pii_speedup: {reference_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
