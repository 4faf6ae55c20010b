"""MonitoringBaseline: what a pushed version's served frames are compared with, and when to alarm."""
