#!/usr/bin/env bash
# LocalStack ready hook (examples/docker-compose.yml): the topic the applications publish
# to, and two queues subscribed to it -- one for the consumer container, one for the demo.
set -euo pipefail

topic_arn=$(awslocal sns create-topic --name sqla-audit --query TopicArn --output text)
for queue in sqla-audit-consumer sqla-audit-demo; do
    url=$(awslocal sqs create-queue --queue-name "$queue" --query QueueUrl --output text)
    arn=$(awslocal sqs get-queue-attributes --queue-url "$url" \
        --attribute-names QueueArn --query Attributes.QueueArn --output text)
    awslocal sns subscribe --topic-arn "$topic_arn" --protocol sqs \
        --notification-endpoint "$arn" >/dev/null
done
echo "sqla-audit: topic $topic_arn with queues sqla-audit-consumer and sqla-audit-demo"
