//! The AWS job queue: owns sending worker jobs to an SQS queue, and creating
//! that queue with its dead-letter queue for tests and tools.
//!
//! A job is the JSON of [`Job`], the same body `broker_core::invocation` parses on the
//! Lambda side. Receiving, acknowledging and dead-lettering are SQS's own
//! business (the Lambda event source mapping and the redrive policy), so this
//! adapter only sends.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::send_message::SendMessageError;
use aws_sdk_sqs::types::QueueAttributeName;

use super::aws_terms;
use broker_core::ports::{Job, JobQueue, QueueError};

/// The longest delay SQS allows; longer ones are cut to it, as the port says.
pub const MAX_DELAY_SECS: u32 = 900;

/// How long the dead-letter queue keeps a message: the SQS maximum (14 days),
/// because a dead letter is kept for a person to look at. A standard queue's
/// message keeps its first enqueue time when it moves, so a shorter retention
/// could drop it on arrival.
const DLQ_RETENTION_SECS: &str = "1209600";

/// The highest `maxReceiveCount` a redrive policy may name.
const MAX_RECEIVE_COUNT: u32 = 1000;

/// The job queue of AWS mode: one SQS queue, addressed by its URL.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

/// Names the queue; the client's configuration is not worth a log line.
impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue").field("queue_url", &self.queue_url).finish_non_exhaustive()
    }
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> SqsQueue {
        SqsQueue { client, queue_url: queue_url.into() }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn enqueue(&self, job: &Job, delay_secs: u32) -> Result<(), QueueError> {
        let body = serde_json::to_string(job)
            .map_err(|_| QueueError(format!("cannot encode the job of operation {}", job.operation_id)))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(sqs_delay(delay_secs))
            .send()
            .await
            .map_err(|err| send_failed(&self.queue_url, job, err))?;
        Ok(())
    }
}

/// `DelaySeconds` for a delay the port allows to be anything: SQS refuses
/// more than 900.
fn sqs_delay(delay_secs: u32) -> i32 {
    // 900 fits an i32, so the conversion cannot fail after the cap.
    i32::try_from(delay_secs.min(MAX_DELAY_SECS)).unwrap_or(900)
}

fn send_failed(queue_url: &str, job: &Job, err: SdkError<SendMessageError>) -> QueueError {
    let why = aws_terms(&err);
    let operation = &job.operation_id;
    QueueError(match err.into_service_error() {
        SendMessageError::QueueDoesNotExist(_) => {
            format!(
                "SQS queue {queue_url} does not exist; the job of operation {operation} was not sent ({why})"
            )
        }
        SendMessageError::RequestThrottled(_) | SendMessageError::KmsThrottled(_) => {
            format!("SQS throttled SendMessage to {queue_url} for operation {operation} ({why})")
        }
        SendMessageError::InvalidSecurity(_) | SendMessageError::KmsAccessDenied(_) => {
            format!("SendMessage to {queue_url} was denied for operation {operation} ({why})")
        }
        _ => format!("SQS SendMessage to {queue_url} failed for operation {operation}: {why}"),
    })
}

/// Creates the queue `name` and its dead-letter queue `<name>-dlq` (first, so
/// its ARN can go into the queue's `RedrivePolicy`), and returns their URLs:
/// (queue, dead-letter queue). A message received `max_receive_count` times
/// without being deleted moves to the dead-letter queue; the count is kept
/// within SQS's 1 to 1000.
///
/// Running it again returns the same URLs; a queue that exists with other
/// attributes (another `max_receive_count`) is given these.
pub async fn create_queue_with_dlq(
    client: &Client,
    name: &str,
    max_receive_count: u32,
) -> Result<(String, String), QueueError> {
    let dlq_name = format!("{name}-dlq");
    let dlq_attributes =
        HashMap::from([(QueueAttributeName::MessageRetentionPeriod, DLQ_RETENTION_SECS.into())]);
    let dlq_url = create_queue(client, &dlq_name, dlq_attributes).await?;
    let dlq_arn = queue_arn(client, &dlq_url).await?;
    let redrive_policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.clamp(1, MAX_RECEIVE_COUNT),
    });
    let attributes = HashMap::from([(QueueAttributeName::RedrivePolicy, redrive_policy.to_string())]);
    let queue_url = create_queue(client, name, attributes).await?;
    Ok((queue_url, dlq_url))
}

/// CreateQueue, which SQS makes idempotent for equal attributes; for other
/// attributes it answers QueueNameExists, and the queue is adopted and given
/// these.
async fn create_queue(
    client: &Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, QueueError> {
    let created =
        client.create_queue().queue_name(name).set_attributes(Some(attributes.clone())).send().await;
    let err = match created {
        Ok(out) => {
            return out
                .queue_url
                .ok_or_else(|| QueueError(format!("SQS CreateQueue {name} returned no URL")));
        }
        Err(err) => err,
    };
    let why = aws_terms(&err);
    match err.into_service_error() {
        CreateQueueError::QueueNameExists(_) => {
            let url = queue_url(client, name).await?;
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|err| {
                    QueueError(format!("SQS SetQueueAttributes on {url} failed: {}", aws_terms(&err)))
                })?;
            Ok(url)
        }
        CreateQueueError::QueueDeletedRecently(_) => Err(QueueError(format!(
            "SQS queue {name} was deleted less than 60 seconds ago and cannot be created yet ({why})"
        ))),
        _ => Err(QueueError(format!("SQS CreateQueue {name} failed: {why}"))),
    }
}

async fn queue_url(client: &Client, name: &str) -> Result<String, QueueError> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|err| QueueError(format!("SQS GetQueueUrl {name} failed: {}", aws_terms(&err))))?;
    out.queue_url.ok_or_else(|| QueueError(format!("SQS GetQueueUrl {name} returned no URL")))
}

async fn queue_arn(client: &Client, queue_url: &str) -> Result<String, QueueError> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|err| {
            QueueError(format!("SQS GetQueueAttributes on {queue_url} failed: {}", aws_terms(&err)))
        })?;
    out.attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| QueueError(format!("SQS GetQueueAttributes on {queue_url} returned no QueueArn")))
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::Message;

    use super::*;
    use crate::sdk_config_for_endpoint;
    use broker_testing::MotoServer;

    fn job(n: u32) -> Job {
        Job {
            v: Job::VERSION,
            operation_id: format!("op-{n}"),
            instance_id: format!("i-{n}"),
            binding_id: Some(format!("b-{n}")),
        }
    }

    async fn client(moto: &MotoServer) -> Client {
        Client::new(&sdk_config_for_endpoint(&moto.endpoint).await)
    }

    /// Receives what is visible within `wait_secs`, leaving it visible again
    /// at once (visibility timeout 0) and not deleting it.
    async fn receive(client: &Client, queue_url: &str, wait_secs: i32) -> Vec<Message> {
        let out = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(0)
            .send()
            .await
            .expect("ReceiveMessage");
        out.messages.unwrap_or_default()
    }

    fn job_in(message: &Message) -> Job {
        serde_json::from_str(message.body().expect("a body")).expect("the body is a job")
    }

    /// The worker's side of the contract: receive and delete, as Lambda's
    /// event source mapping does for a handled batch.
    struct Receiver(Client, String);

    #[async_trait::async_trait]
    impl broker_testing::contract::queue::Receiver for Receiver {
        async fn take_visible(&self) -> Vec<Job> {
            let mut jobs = Vec::new();
            loop {
                let messages = receive(&self.0, &self.1, 0).await;
                if messages.is_empty() {
                    return jobs;
                }
                for m in messages {
                    let handle = m.receipt_handle().expect("a receipt handle");
                    self.0.delete_message().queue_url(&self.1).receipt_handle(handle).send().await.unwrap();
                    jobs.push(job_in(&m));
                }
            }
        }
    }

    async fn open() -> (SqsQueue, Receiver, MotoServer) {
        let moto = MotoServer::start();
        let client = client(&moto).await;
        let (url, _) = create_queue_with_dlq(&client, "jobs-contract", 3).await.unwrap();
        (SqsQueue::new(client.clone(), &url), Receiver(client, url), moto)
    }

    broker_testing::queue_contract!(open);

    #[test]
    fn delays_over_fifteen_minutes_are_cut_to_900_seconds() {
        assert_eq!(sqs_delay(0), 0);
        assert_eq!(sqs_delay(900), 900);
        assert_eq!(sqs_delay(901), 900);
        assert_eq!(sqs_delay(u32::MAX), 900);
    }

    #[tokio::test]
    async fn a_delay_over_900_seconds_is_sent_as_900() {
        let moto = MotoServer::start();
        let client = client(&moto).await;
        let (url, _) = create_queue_with_dlq(&client, "jobs-capped", 3).await.unwrap();
        let too_long =
            client.send_message().queue_url(&url).message_body("{}").delay_seconds(901).send().await;
        assert!(too_long.is_err(), "moto refuses a delay over 900 s, as SQS does");

        SqsQueue::new(client.clone(), &url).enqueue(&job(3), 3600).await.unwrap();

        assert!(receive(&client, &url, 0).await.is_empty(), "the job is still delayed");
    }

    #[tokio::test]
    async fn a_job_received_max_receive_count_times_moves_to_the_dead_letter_queue() {
        let moto = MotoServer::start();
        let client = client(&moto).await;
        let (url, dlq_url) = create_queue_with_dlq(&client, "jobs-redrive", 1).await.unwrap();
        SqsQueue::new(client.clone(), &url).enqueue(&job(4), 0).await.unwrap();

        assert_eq!(receive(&client, &url, 0).await.len(), 1, "the first delivery");
        assert!(receive(&client, &url, 0).await.is_empty(), "no second delivery");

        let dead = receive(&client, &dlq_url, 0).await;
        assert_eq!(dead.iter().map(job_in).collect::<Vec<_>>(), vec![job(4)]);
    }

    #[tokio::test]
    async fn creating_the_queues_again_returns_the_same_urls() {
        let moto = MotoServer::start();
        let client = client(&moto).await;

        let first = create_queue_with_dlq(&client, "jobs-twice", 5).await.unwrap();
        let again = create_queue_with_dlq(&client, "jobs-twice", 5).await.unwrap();

        assert_eq!(first, again);
        assert!(first.1.ends_with("/jobs-twice-dlq"), "the dead-letter queue is {}", first.1);
    }

    #[tokio::test]
    async fn creating_the_queues_with_another_receive_count_updates_the_redrive_policy() {
        let moto = MotoServer::start();
        let client = client(&moto).await;
        let first = create_queue_with_dlq(&client, "jobs-recount", 5).await.unwrap();

        let again = create_queue_with_dlq(&client, "jobs-recount", 2).await.unwrap();

        assert_eq!(first, again);
        let attributes = client
            .get_queue_attributes()
            .queue_url(&again.0)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let policy: serde_json::Value =
            serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "2");
        assert!(policy["deadLetterTargetArn"].as_str().unwrap().ends_with(":jobs-recount-dlq"));
    }

    #[tokio::test]
    async fn enqueueing_to_a_missing_queue_names_the_queue_and_the_aws_error() {
        let moto = MotoServer::start();
        let client = client(&moto).await;
        let (url, _) = create_queue_with_dlq(&client, "jobs-gone", 3).await.unwrap();
        client.delete_queue().queue_url(&url).send().await.unwrap();

        let err = SqsQueue::new(client, &url).enqueue(&job(5), 0).await.unwrap_err().to_string();

        assert!(err.contains(&url), "{err}");
        assert!(err.contains("does not exist") && err.contains("NonExistentQueue"), "{err}");
        assert!(err.contains("op-5"), "{err}");
    }
}
