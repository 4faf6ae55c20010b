"""The ingestion report: per-file statuses summed up by reason, and the bad-file budget.

Two kinds of lines are no input file and count toward neither the files nor the budget: SKIPPED
(a folder the pattern matches) and METADATA_ROW (a metadata.csv row that names no listed file).
"""
import collections
from typing import Any, Dict, Iterable

ACCEPTED, CONVERTED, REJECTED = 'accepted', 'converted', 'rejected'
SKIPPED, METADATA_ROW = 'skipped', 'metadata_row'
STATUS_FIELDS = ('status', 'reason', 'image', 'detail')
REPORT_FILE = 'report.json'
_WORST_FILES_SHOWN = 10


def summarize(statuses: Iterable[Dict[str, str]]) -> Dict[str, Any]:
    """Aggregates per-file status lines into the ingestion report."""
    counts = collections.Counter()
    converted = collections.Counter()
    rejected = collections.Counter()
    rejected_files, skipped, metadata_rows = [], [], []
    for status in statuses:
        line = {k: status[k] for k in ('image', 'reason', 'detail')}
        if status['status'] == SKIPPED:
            skipped.append(line)
            continue
        if status['status'] == METADATA_ROW:
            metadata_rows.append(line)
            continue
        counts[status['status']] += 1
        if status['status'] == CONVERTED:
            converted[status['reason']] += 1
        elif status['status'] == REJECTED:
            rejected[status['reason']] += 1
            rejected_files.append(line)
    total = sum(counts.values())
    rejected_files.sort(key=lambda f: (-rejected[f['reason']], f['image']))
    return {
        'total_files': total,
        'examples': counts[ACCEPTED] + counts[CONVERTED],
        'converted': dict(converted),
        'rejected': dict(rejected),
        'rejected_fraction': counts[REJECTED] / total if total else 0.0,
        'rejected_files': rejected_files,
        'skipped': dict(collections.Counter(line['reason'] for line in skipped)),
        'skipped_entries': sorted(skipped, key=lambda line: line['image']),
        'metadata_rows_without_file': sorted(metadata_rows, key=lambda line: line['image']),
    }


def check_report(report: Dict[str, Any], max_bad_fraction: float) -> None:
    """Raises when too many files were rejected, naming the worst of them."""
    if report['examples'] and report['rejected_fraction'] <= max_bad_fraction:
        return
    worst = '; '.join(f"{f['image']} ({f['reason']})" for f in report['rejected_files'][:_WORST_FILES_SHOWN])
    raise RuntimeError(
        f"ImageExampleGen: {sum(report['rejected'].values())} of {report['total_files']} input files "
        f"({report['rejected_fraction']:.1%}) could not be used, above max_bad_fraction="
        f"{max_bad_fraction:.2%}. Rejected by reason: {report['rejected']}. Worst files: {worst}")
