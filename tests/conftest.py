"""Suite-wide fixtures. The log scan checks, at the end of the session, that no log line written by
the exporter (in-process or by the processes the tests start) holds a secret, a signature or a
full phone number."""

from .conftest_logscan import log_scan  # noqa: F401
