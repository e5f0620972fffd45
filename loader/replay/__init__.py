"""Replay from S3, the archive of record: reload files into a table, or re-publish
their records to Kafka. Both read only what the workers wrote; neither touches the
workers' checkpoints."""
