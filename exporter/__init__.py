"""vobiz-exporter: verified Vobiz SIP-trunk webhooks become Prometheus metrics."""

__version__ = "0.1.0"
