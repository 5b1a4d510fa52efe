"""Sensors. DriftSensor arrives with the drift-monitoring issue; nothing here is wired yet."""
