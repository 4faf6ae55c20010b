"""Running things on a machine: the Airflow deployment (`petpark airflow up|down|status`) and the
lock that keeps two runs off one metadata store."""
