"""The service's rules, between the routes and worker steps that call them and the tables they change.

`lifecycle` owns a deletion request's life (states, transitions, events, follow-up tasks); `requests`
and `forget` hold the queries about requests and erased samples; `catalog` those about datasets and
models; `problems` the errors a caller can act on. Nothing here imports torch, FastAPI or Celery tasks.
"""
