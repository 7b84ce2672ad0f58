"""A development host for ``function_app.py`` where the Functions host (``func``) cannot run.

It drives the app's own functions: HTTP routes, timers, blob polling, and orchestrations replayed by
azure-functions-durable's real engine over a persisted history.
"""
