"""TaskNation Relay: authenticates TaskNation webhooks and publishes them to Kafka."""

__version__ = "0.1.0"
