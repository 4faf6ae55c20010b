"""A breach becomes alerts in Alertmanager's format: posted to Alertmanager's API (/api/v2/alerts)
or, where there is none, to a plain webhook as Alertmanager's own webhook payload. One alert per
breached check and window; a check of a version alerted within the cooldown is not alerted again
(the state is <home>/monitoring/alerts.json, written whole)."""
import datetime
import json
import os
import time
import urllib.request
from typing import Any, Dict, List, Optional

from petpark.serving import files

ALERT_NAME = 'PetparkMonitorBreach'


def breach_alerts(document: Dict[str, Any], report_url: str) -> List[Dict[str, Any]]:
    """One Alertmanager alert per breached check of a window's report."""
    now = datetime.datetime.now(datetime.timezone.utc)
    estimate = document['numbers'].get('estimate', {}).get('message', '')
    actions = '; '.join(document.get('actions', [])) or 'none'
    alerts = []
    for reason in document['reasons']:
        alerts.append({
            'labels': {'alertname': ALERT_NAME, 'model': document['model_name'], 'model_name': document['model_name'],
                       'version': document['version'],
                       'check': reason['check'], 'window': document['window_id'], 'severity': 'warning'},
            'annotations': {'summary': f"{document['model_name']} {document['version']}: {reason['message']}",
                            'description': f'{estimate} Actions: {actions}.', 'report': report_url},
            'startsAt': now.isoformat(), 'endsAt': (now + datetime.timedelta(hours=1)).isoformat(),
            'generatorURL': report_url})
    return alerts


def _post(url: str, body: Any, timeout: float = 10.0) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={'Content-Type': 'application/json'},
                                     method='POST')
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()


def _key(alert: Dict[str, Any]) -> str:
    """What a cooldown is kept for: a check of a model's version (a new version is alerted anew)."""
    labels = alert['labels']
    return f"{labels['model']}|{labels['version']}|{labels['check']}"


class Alerter:
    """Posts alerts, at most one per (model, version, check) within `cooldown_seconds`."""

    def __init__(self, state_path: str, cooldown_seconds: float, alertmanager_url: str = '', webhook_url: str = '',
                 clock=time.time):
        self.state_path, self.cooldown = state_path, cooldown_seconds
        self.alertmanager_url, self.webhook_url = alertmanager_url, webhook_url
        self._clock = clock

    def _state(self) -> Dict[str, float]:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def send(self, alerts: List[Dict[str, Any]]) -> Optional[str]:
        """Posts the alerts not in their cooldown; returns where they went, or why none were sent."""
        if not (self.alertmanager_url or self.webhook_url):
            return 'no Alertmanager or webhook configured'
        state, now = self._state(), self._clock()
        due = [a for a in alerts if now - state.get(_key(a), -1e18) >= self.cooldown]
        if not due:
            return f'{len(alerts)} alert(s) within the cooldown of {self.cooldown:g} s: not sent again'
        if self.alertmanager_url:
            target = f"{self.alertmanager_url.rstrip('/')}/api/v2/alerts"
            _post(target, due)
        else:
            target = self.webhook_url
            _post(target, {'version': '4', 'status': 'firing', 'receiver': 'petpark-monitor',
                           'groupLabels': {'alertname': ALERT_NAME}, 'alerts': [dict(a, status='firing') for a in due]})
        for alert in due:
            state[_key(alert)] = now
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        files.write_text_atomically(self.state_path, json.dumps(state, indent=1, sort_keys=True))
        return f'{len(due)} alert(s) posted to {target}'
