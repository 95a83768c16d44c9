"""The pipeline's Prefect edge inside tasks/: the @task steps, the housekeeping steps and the family locks.

The one package of tasks/ that imports Prefect; everything below it is plain Python.
"""
