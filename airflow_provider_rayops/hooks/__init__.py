"""Airflow hooks: one per connection type rayops declares (`rayops_ray`, `rayops_s3`)."""
