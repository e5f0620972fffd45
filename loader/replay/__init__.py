"""Replay from S3, the archive of record: reload files into a table, re-publish their
records to Kafka, or re-drive dead letters that decode after a fix. All read what the
workers wrote (a re-drive adds files, never changes one); none touches the workers'
checkpoints."""
