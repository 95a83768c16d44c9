"""bakery tasks: plain domain code, with thin Prefect ``@task`` wrappers at the edge."""
