#!/bin/bash
# LocalStack "ready" hook: create the S3 and SQS pieces the loader expects,
# the same ones loader/notify/provision.py creates (and with the same rule ids, so a
# later `provision` finds them and changes nothing):
#   - the bucket the event specs write to;
#   - the notifications queue, with a dead-letter queue after 5 receives;
#   - one ObjectCreated rule per event data prefix, delivering to the queue.
# docker-compose.yml mounts this folder at /etc/localstack/init/ready.d/.
# Safe to run twice. tests/unit/test_packaging.py checks the names below
# against pipelines/*.yaml.
set -euo pipefail

BUCKET="delivery-events"
QUEUE="loader-notifications"
DLQ="${QUEUE}-dlq"
MAX_RECEIVE_COUNT=5

# One line per event spec in pipelines/: its s3.prefix followed by /data/.
DATA_PREFIXES=(
  "events/store_updated/data/"
  "events/order_created/data/"
  "events/app_click/data/"
)

queue_arn() {
  awslocal sqs get-queue-attributes --queue-url "$1" --attribute-names QueueArn \
    --query Attributes.QueueArn --output text
}

if awslocal s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  echo "bucket $BUCKET exists"
else
  awslocal s3api create-bucket --bucket "$BUCKET" >/dev/null
  echo "bucket $BUCKET created"
fi

dlq_url="$(awslocal sqs create-queue --queue-name "$DLQ" --query QueueUrl --output text)"
dlq_arn="$(queue_arn "$dlq_url")"

# The redrive policy is a JSON document inside a JSON string: escape its quotes.
redrive="{\"deadLetterTargetArn\":\"${dlq_arn}\",\"maxReceiveCount\":\"${MAX_RECEIVE_COUNT}\"}"
queue_url="$(awslocal sqs create-queue --queue-name "$QUEUE" --query QueueUrl --output text)"
# set-queue-attributes rather than create-queue --attributes: re-running with
# other attributes would fail with QueueAlreadyExists.
awslocal sqs set-queue-attributes --queue-url "$queue_url" \
  --attributes "{\"RedrivePolicy\":\"${redrive//\"/\\\"}\"}"
arn="$(queue_arn "$queue_url")"
echo "queue $queue_url (dead letters to $DLQ after $MAX_RECEIVE_COUNT receives)"

# S3 replaces the whole notification configuration on each write, so write
# every rule at once. Rule ids follow loader/notify/provision.py: loader-<prefix with / as ->.
rules=""
for prefix in "${DATA_PREFIXES[@]}"; do
  id="loader-${prefix%/}"
  id="${id//\//-}"
  rules+="${rules:+,}{\"Id\":\"${id}\",\"QueueArn\":\"${arn}\",\"Events\":[\"s3:ObjectCreated:*\"],"
  rules+="\"Filter\":{\"Key\":{\"FilterRules\":[{\"Name\":\"prefix\",\"Value\":\"${prefix}\"}]}}}"
done
# Real AWS would also need a queue policy letting s3.amazonaws.com send to the
# queue; LocalStack does not check it.
awslocal s3api put-bucket-notification-configuration --bucket "$BUCKET" \
  --notification-configuration "{\"QueueConfigurations\":[${rules}]}"
echo "notifications of $BUCKET: ${DATA_PREFIXES[*]} -> $QUEUE"
