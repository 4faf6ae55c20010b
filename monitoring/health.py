"""Application health over a window, from Prometheus (its HTTP query API): request rate, error
ratio, latency percentiles and dropped request-log records of a model, from the metrics
`petpark serve` and TF Serving expose under the same names."""
import json
import urllib.parse
import urllib.request
from typing import Dict, Optional

QUERIES = {
    'requests_per_second': 'sum(increase(:tensorflow:serving:request_count{{model_name="{m}"}}[{d}s])) / {d}',
    'error_ratio': 'sum(increase(:tensorflow:serving:request_count{{model_name="{m}",status!="OK"}}[{d}s])) / '
                   'sum(increase(:tensorflow:serving:request_count{{model_name="{m}"}}[{d}s]))',
    'latency_p50_ms': 'histogram_quantile(0.5, sum by (le) (increase('
                      ':tensorflow:serving:request_latency_bucket{{model_name="{m}"}}[{d}s]))) / 1000',
    'latency_p99_ms': 'histogram_quantile(0.99, sum by (le) (increase('
                      ':tensorflow:serving:request_latency_bucket{{model_name="{m}"}}[{d}s]))) / 1000',
    'dropped_log_records': 'sum(increase(:tensorflow:serving:request_log_count{{model_name="{m}",status!="OK"}}[{d}s]))',
}


def query(prometheus_url: str, expression: str, at: float, timeout: float = 10.0) -> Optional[float]:
    """The value of an instant query at `at` (None when Prometheus has no data for it)."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({'query': expression, 'time': at})
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body = json.load(answer)
    if body.get('status') != 'success':
        raise ValueError(f'Prometheus at {prometheus_url}: {body.get("error", body)}')
    result = body['data']['result']
    if not result:
        return None
    value = float(result[0]['value'][1])
    return value if value == value else None  # NaN: no requests in the window


def window_health(prometheus_url: str, model_name: str, start: float, end: float) -> Dict[str, Optional[float]]:
    """Each of QUERIES over [start, end]; an unreachable Prometheus is reported, not raised."""
    seconds = max(int(end - start), 60)
    found = {}
    for name, template in QUERIES.items():
        try:
            found[name] = query(prometheus_url, template.format(m=model_name, d=seconds), end)
        except (OSError, ValueError) as e:
            return {'error': f'Prometheus at {prometheus_url} not reachable: {e}'}
    return found
