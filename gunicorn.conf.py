"""gunicorn settings for `make serve` and the benchmark's server (`bench/serving.py`).

Every value can be overridden from the environment, so a deployment changes them without
editing this file. Casebook keeps no state in a worker's memory that another worker would
need (see README, "Running in production"), so adding workers or hosts is the way to scale.
"""

import multiprocessing
import os

#: Sync workers: 2 x CPUs + 1 (gunicorn's rule of thumb: one computes while another waits on
#: PostgreSQL). WEB_CONCURRENCY is the usual way platforms set it.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
bind = os.environ.get("CASEBOOK_BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}")
#: Behind a reverse proxy on the same host: trust its X-Forwarded-* headers (HTTPS, client IP).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
#: Long enough for an API export of 100,000 records streamed to a slow client.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
# No max_requests: recycling a worker would also end the browser exports running in its threads.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
# The path only (no query string: record IDs and API parameters stay out of the log).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


def post_worker_init(worker: object) -> None:
    """Tune the garbage collector for the loaded app (see app/runtime.py)."""
    from app.runtime import settle_loaded_app

    settle_loaded_app()
