"""The ingestion report: per-file statuses summed up by reason, and the bad-file budget."""
import collections
from typing import Any, Dict, Iterable

ACCEPTED, CONVERTED, REJECTED = 'accepted', 'converted', 'rejected'
STATUS_FIELDS = ('status', 'reason', 'image', 'detail')
REPORT_FILE = 'report.json'
_WORST_FILES_SHOWN = 10


def summarize(statuses: Iterable[Dict[str, str]]) -> Dict[str, Any]:
    """Aggregates per-file status lines into the ingestion report."""
    counts = collections.Counter()
    converted = collections.Counter()
    rejected = collections.Counter()
    rejected_files = []
    for status in statuses:
        counts[status['status']] += 1
        if status['status'] == CONVERTED:
            converted[status['reason']] += 1
        elif status['status'] == REJECTED:
            rejected[status['reason']] += 1
            rejected_files.append({k: status[k] for k in ('image', 'reason', 'detail')})
    total = sum(counts.values())
    rejected_files.sort(key=lambda f: (-rejected[f['reason']], f['image']))
    return {
        'total_files': total,
        'examples': counts[ACCEPTED] + counts[CONVERTED],
        'converted': dict(converted),
        'rejected': dict(rejected),
        'rejected_fraction': counts[REJECTED] / total if total else 0.0,
        'rejected_files': rejected_files,
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
