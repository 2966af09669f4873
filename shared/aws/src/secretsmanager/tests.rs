use super::*;
use crate::sdk_config_for_endpoint;
use broker_testing::MotoServer;

async fn client(moto: &MotoServer) -> Client {
    Client::new(&sdk_config_for_endpoint(&moto.endpoint).await)
}

async fn store(moto: &MotoServer) -> SecretsManagerStore {
    SecretsManagerStore::new(client(moto).await)
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value)
}

async fn read(store: &SecretsManagerStore, reference: &str, stage: Stage) -> Option<String> {
    store.read(reference, stage).await.unwrap().map(|v| v.expose_secret().to_string())
}

async fn open() -> (SecretsManagerStore, MotoServer) {
    let moto = MotoServer::start();
    (store(&moto).await, moto)
}

broker_testing::secret_contract!(open);

#[test]
fn the_recovery_window_is_kept_within_7_to_30_days() {
    let client = Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .build(),
    );
    let store = SecretsManagerStore::new(client);
    assert_eq!(store.recovery_window_days(), 7);
    assert_eq!(store.clone().with_recovery_window_days(1).recovery_window_days(), 7);
    assert_eq!(store.clone().with_recovery_window_days(14).recovery_window_days(), 14);
    assert_eq!(store.with_recovery_window_days(365).recovery_window_days(), 30);
}

#[tokio::test]
async fn the_debug_of_the_store_shows_no_value() {
    let moto = MotoServer::start();
    let store = store(&moto).await.with_owner("debug");
    let arn = store.create("debug/admin", &secret("debug-value-never-printed")).await.unwrap();
    let _ = store.read(&arn, Stage::Current).await.unwrap();

    let shown = format!("{store:?}");

    assert_eq!(
        shown,
        "SecretsManagerStore { recovery_window_days: 7, rotation_function: None, owner: Some(\"debug\"), .. }"
    );
}

#[tokio::test]
async fn a_created_secret_reads_back_at_current_by_its_arn() {
    let moto = MotoServer::start();
    let store = store(&moto).await;

    let arn = store.create("create/admin", &secret("first-password")).await.unwrap();

    assert!(arn.starts_with("arn:aws:secretsmanager:") && arn.contains(":secret:create/admin"), "{arn}");
    assert_eq!(read(&store, &arn, Stage::Current).await.as_deref(), Some("first-password"));
}

#[tokio::test]
async fn a_secret_that_never_existed_reads_none_by_an_arn_or_a_name() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:never/admin-AbCdEf";

    assert_eq!(read(&store, arn, Stage::Current).await, None);
    assert_eq!(read(&store, "never/admin", Stage::Current).await, None);
}

#[tokio::test]
async fn a_stage_move_is_seen_at_current_previous_and_pending() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let client = client(&moto).await;
    let arn = store.create("rotated/admin", &secret("old-password")).await.unwrap();
    let old_version = client.describe_secret().secret_id(&arn).send().await.unwrap().version_ids_to_stages;
    let old_version = old_version.unwrap().into_keys().next().unwrap();

    client
        .put_secret_value()
        .secret_id(&arn)
        .client_request_token("rotation-0000-0000-0000-000000000001")
        .secret_string("new-password")
        .version_stages(Stage::Pending.label())
        .send()
        .await
        .unwrap();
    assert_eq!(read(&store, &arn, Stage::Pending).await.as_deref(), Some("new-password"));
    assert_eq!(read(&store, &arn, Stage::Current).await.as_deref(), Some("old-password"));

    client
        .update_secret_version_stage()
        .secret_id(&arn)
        .version_stage(Stage::Current.label())
        .move_to_version_id("rotation-0000-0000-0000-000000000001")
        .remove_from_version_id(&old_version)
        .send()
        .await
        .unwrap();
    assert_eq!(read(&store, &arn, Stage::Current).await.as_deref(), Some("new-password"));
    assert_eq!(read(&store, &arn, Stage::Previous).await.as_deref(), Some("old-password"));
}

#[tokio::test]
async fn a_deleted_secret_stays_recoverable_for_the_recovery_window() {
    let moto = MotoServer::start();
    let store = store(&moto).await.with_recovery_window_days(10);
    let arn = store.create("window/admin", &secret("window-password")).await.unwrap();

    store.delete(&arn).await.unwrap();

    let described = client(&moto).await.describe_secret().secret_id(&arn).send().await.unwrap();
    let deleted_at = described.deleted_date.expect("scheduled for deletion").secs();
    let days = (deleted_at - chrono::Utc::now().timestamp()) as f64 / 86_400.0;
    assert!((9.9..=10.1).contains(&days), "deletion in {days} days");
}

#[tokio::test]
async fn creating_a_secret_scheduled_for_deletion_restores_it_with_the_new_value() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let old = store.create("reused/admin", &secret("old-password")).await.unwrap();
    store.delete(&old).await.unwrap();

    let new = store.create("reused/admin", &secret("new-password")).await.unwrap();

    assert_eq!(new, old);
    assert_eq!(read(&store, &new, Stage::Current).await.as_deref(), Some("new-password"));
    let again = store.create("reused/admin", &secret("third-password")).await.unwrap();
    assert_eq!(again, new);
    assert_eq!(read(&store, &new, Stage::Current).await.as_deref(), Some("new-password"));
}

#[tokio::test]
async fn scheduling_a_rotation_without_a_rotation_function_names_the_missing_setting() {
    let moto = MotoServer::start();
    let store = store(&moto).await.with_rotation_function(Some(" ".into()));
    let arn = store.create("nofunction/admin", &secret("old-password")).await.unwrap();

    let err = store.schedule_rotation(&arn, 30).await.unwrap_err();

    assert!(matches!(err, SecretError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("ROTATION_FUNCTION_ARN is not set"), "{err}");
    assert_eq!(store.describe(&arn).await.unwrap().rotation_days, None);
}

#[tokio::test]
async fn broker_credentials_are_read_from_the_json_secret() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    let created = client
        .create_secret()
        .name("broker/credentials")
        .secret_string(r#"{"username": "osb-platform", "password": "broker-password-value"}"#)
        .send()
        .await
        .unwrap();

    let (username, password) = read_broker_credentials(&client, created.arn().unwrap()).await.unwrap();

    assert_eq!(username, "osb-platform");
    assert_eq!(password.expose_secret(), "broker-password-value");
}

#[tokio::test]
async fn broker_credentials_without_a_password_name_the_arn_and_the_key_but_no_value() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    let created = client
        .create_secret()
        .name("broker/no-password")
        .secret_string(r#"{"username": "osb-platform-name", "passwd": "misnamed-password-value"}"#)
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap();

    let err = read_broker_credentials(&client, arn).await.unwrap_err().to_string();

    assert!(err.contains(arn) && err.contains("\"password\""), "{err}");
    assert!(!err.contains("osb-platform-name") && !err.contains("misnamed-password-value"), "{err}");
}

#[tokio::test]
async fn broker_credentials_that_are_not_json_name_the_arn_but_no_value() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    let created = client
        .create_secret()
        .name("broker/not-json")
        .secret_string("plain-password-value")
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap();

    let err = read_broker_credentials(&client, arn).await.unwrap_err().to_string();

    assert!(err.contains(arn), "{err}");
    assert!(!err.contains("plain-password-value"), "{err}");
}

#[tokio::test]
async fn broker_credentials_of_a_missing_secret_are_not_found() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:broker/absent-AbCdEf";

    let err = read_broker_credentials(&client, arn).await.unwrap_err();

    assert!(matches!(&err, SecretError::NotFound(named) if named == arn), "{err}");
}

/// RotateSecret and its effect on DescribeSecret, without moto: moto's
/// RotateSecret looks the function up among its own Lambda functions and
/// answers ResourceNotFoundException for any other (after recording the
/// rotation), so a real function ARN cannot be tried there.
mod rotation {
    use std::sync::{Arc, Mutex};

    use aws_sdk_secretsmanager::config::retry::RetryConfig;
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
    use aws_sdk_secretsmanager::operation::rotate_secret::RotateSecretOutput;
    use aws_sdk_secretsmanager::types::error::ResourceNotFoundException;
    use aws_smithy_mocks::{MockResponse, MockResponseInterceptor, Rule, RuleMode, mock};

    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:osb/instances/i-1/admin-AbCdEf";
    const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:osb-provisioner";

    /// What RotateSecret was asked, and the rotation it leaves set.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Rotate {
        function: Option<String>,
        days: Option<i64>,
        immediately: Option<bool>,
    }

    #[derive(Default)]
    struct Secret {
        /// Every RotateSecret, in order.
        requests: Vec<Rotate>,
        /// (function, days) once rotation is on.
        rotation: Option<(String, i64)>,
    }

    /// A client whose DescribeSecret and RotateSecret act on `state`,
    /// and which knows no secret but [`ARN`].
    fn client(state: Arc<Mutex<Secret>>) -> Client {
        let s = state.clone();
        let describe = mock!(Client::describe_secret)
            .match_requests(|req| req.secret_id() == Some(ARN))
            .then_output(move || {
                let rotation = s.lock().unwrap().rotation.clone();
                let out = DescribeSecretOutput::builder()
                    .arn(ARN)
                    .name("osb/instances/i-1/admin")
                    .version_ids_to_stages("v1", vec!["AWSCURRENT".to_string()]);
                match rotation {
                    Some((function, days)) => out
                        .rotation_enabled(true)
                        .rotation_lambda_arn(function)
                        .rotation_rules(RotationRulesType::builder().automatically_after_days(days).build())
                        .build(),
                    None => out.build(),
                }
            });
        let s = state.clone();
        let rotate = mock!(Client::rotate_secret)
            .match_requests(|req| req.secret_id() == Some(ARN))
            .then_compute_response(move |req| {
                let request = Rotate {
                    function: req.rotation_lambda_arn().map(str::to_string),
                    days: req.rotation_rules().and_then(|r| r.automatically_after_days()),
                    immediately: req.rotate_immediately(),
                };
                let mut st = s.lock().unwrap();
                if let (Some(function), Some(days)) = (&request.function, request.days) {
                    st.rotation = Some((function.clone(), days));
                }
                st.requests.push(request);
                MockResponse::Output(RotateSecretOutput::builder().arn(ARN).build())
            });
        let missing = |what: &str| {
            let message = format!("Secrets Manager can't find the specified secret ({what}).");
            ResourceNotFoundException::builder()
                .message(&message)
                .meta(ErrorMetadata::builder().code("ResourceNotFoundException").message(&message).build())
                .build()
        };
        let describe_missing = mock!(Client::describe_secret)
            .then_error(move || DescribeSecretError::ResourceNotFoundException(missing("describe")));
        let rotate_missing = mock!(Client::rotate_secret)
            .then_error(move || RotateSecretError::ResourceNotFoundException(missing("rotate")));
        mocked(&[&describe, &rotate, &describe_missing, &rotate_missing])
    }

    /// A Secrets Manager client answering with `rules`, the first match
    /// winning, without the SDK's retries.
    fn mocked(rules: &[&Rule]) -> Client {
        let interceptor = rules
            .iter()
            .fold(MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny), |i, rule| i.with_rule(rule));
        Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("test", "test", None, None, "static"))
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor)
                .retry_config(RetryConfig::disabled())
                .build(),
        )
    }

    fn store(state: &Arc<Mutex<Secret>>) -> SecretsManagerStore {
        SecretsManagerStore::new(client(state.clone())).with_rotation_function(Some(FUNCTION.into()))
    }

    #[tokio::test]
    async fn scheduling_names_the_rotation_function_and_the_days_and_does_not_rotate_now() {
        let state = Arc::default();
        let store = store(&state);

        store.schedule_rotation(ARN, 30).await.unwrap();

        let expected = Rotate { function: Some(FUNCTION.into()), days: Some(30), immediately: Some(false) };
        assert_eq!(state.lock().unwrap().requests, [expected]);
        assert_eq!(store.describe(ARN).await.unwrap().rotation_days, Some(30));
    }

    #[tokio::test]
    async fn scheduling_the_same_rotation_again_sends_nothing_and_another_interval_is_sent() {
        let state = Arc::default();
        let store = store(&state);
        store.schedule_rotation(ARN, 30).await.unwrap();

        store.schedule_rotation(ARN, 30).await.unwrap();
        assert_eq!(state.lock().unwrap().requests.len(), 1, "already scheduled");

        store.schedule_rotation(ARN, 7).await.unwrap();
        let requests = state.lock().unwrap().requests.clone();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].days, Some(7));
        assert_eq!(store.describe(ARN).await.unwrap().rotation_days, Some(7));
    }

    #[tokio::test]
    async fn a_rotation_set_up_with_another_function_is_set_up_again_with_ours() {
        let state: Arc<Mutex<Secret>> = Arc::default();
        state.lock().unwrap().rotation = Some(("arn:aws:lambda:us-east-1:1:function:old".into(), 30));
        let store = store(&state);

        store.schedule_rotation(ARN, 30).await.unwrap();

        assert_eq!(state.lock().unwrap().rotation, Some((FUNCTION.to_string(), 30)));
    }

    #[tokio::test]
    async fn intervals_secrets_manager_refuses_are_refused_without_a_call() {
        let state = Arc::default();
        let store = store(&state);

        for days in [0, 1001] {
            let err = store.schedule_rotation(ARN, days).await.unwrap_err();
            assert!(err.to_string().contains("1 to 1000"), "{err}");
        }
        assert!(state.lock().unwrap().requests.is_empty());
    }

    #[tokio::test]
    async fn rotating_now_asks_for_an_immediate_rotation_by_the_rotation_function() {
        let state = Arc::default();
        let store = store(&state);

        store.rotate_now(ARN).await.unwrap();

        let expected = Rotate { function: Some(FUNCTION.into()), days: None, immediately: Some(true) };
        assert_eq!(state.lock().unwrap().requests, [expected]);
    }

    #[tokio::test]
    async fn rotating_a_missing_secret_is_not_found() {
        let state = Arc::default();
        let store = store(&state);
        let missing = "osb/instances/never/admin";

        let err = store.rotate_now(missing).await.unwrap_err();
        assert!(matches!(&err, SecretError::NotFound(named) if named == missing), "{err}");
        let err = store.schedule_rotation(missing, 30).await.unwrap_err();
        assert!(matches!(&err, SecretError::NotFound(named) if named == missing), "{err}");
    }

    /// Secrets Manager API reference, Common Errors: AccessDeniedException
    /// ("You don't have permission to perform this action") and
    /// ValidationException ("The input fails to satisfy the constraints
    /// specified by an AWS service") do not go away on a retry, so they
    /// are Refused, and the worker fails the operation at once instead of
    /// retrying until its deadline. Throttling stays Unavailable.
    #[tokio::test]
    async fn access_denied_and_validation_errors_are_refused_and_throttling_is_not() {
        use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        let meta = |code: &'static str| {
            move || ErrorMetadata::builder().code(code).message(format!("{code} from the test")).build()
        };
        for (code, refused) in
            [("AccessDeniedException", true), ("ValidationException", true), ("ThrottlingException", false)]
        {
            let (create, get) = (meta(code), meta(code));
            let create_rule =
                mock!(Client::create_secret).then_error(move || CreateSecretError::generic(create()));
            let get_rule =
                mock!(Client::get_secret_value).then_error(move || GetSecretValueError::generic(get()));
            let store = SecretsManagerStore::new(mocked(&[&create_rule, &get_rule]));

            let err = store.create("osb/instances/i-1/admin", &SecretString::from("pw")).await.unwrap_err();
            assert_eq!(matches!(err, SecretError::Refused(_)), refused, "CreateSecret {code}: {err:?}");
            assert!(err.to_string().contains(code), "{err}");
            let err = store.read(ARN, Stage::Current).await.unwrap_err();
            assert_eq!(matches!(err, SecretError::Refused(_)), refused, "GetSecretValue {code}: {err:?}");
        }
    }
}

/// The orphan sweep lists only secrets under the prefix that carry the
/// broker's tag, a page at a time, and a deleted one drops out.
#[tokio::test]
async fn the_sweep_lists_the_brokers_tagged_secrets_by_page_and_deletes_them() {
    use broker_core::domain::ResourceKind;
    use broker_core::ports::{Claim, Inventory, LiveCaches, Removal};

    let moto = MotoServer::start();
    let ours = store(&moto).await.with_owner("ecb");
    let theirs = store(&moto).await.with_owner("ecbx");
    let untagged = store(&moto).await;
    let mut made = Vec::new();
    for n in 0..105 {
        made.push(ours.create(&format!("ecb/instances/i-{n:03}/admin"), &secret("p")).await.unwrap());
    }
    theirs.create("ecbx/instances/i-1/admin", &secret("p")).await.unwrap();
    untagged.create("ecb/instances/made-before-tags/admin", &secret("p")).await.unwrap();
    ours.create("other/ecb/instances/i-1/admin", &secret("p")).await.unwrap();

    let live = LiveCaches::new();
    let first = ours.leftovers(ResourceKind::Secret, None, &live).await.unwrap();
    let token = first.next.clone().expect("more than a page");
    let second = ours.leftovers(ResourceKind::Secret, Some(&token), &live).await.unwrap();
    assert_eq!(second.next, None);
    let mut names: Vec<String> =
        first.leftovers.iter().chain(&second.leftovers).map(|l| l.id.clone()).collect();
    names.sort();
    let want: Vec<String> = (0..105).map(|n| format!("ecb/instances/i-{n:03}/admin")).collect();
    assert_eq!(names, want, "only the tagged secrets under the prefix");
    let one = &first.leftovers[0];
    assert_eq!(one.claim, Claim::SecretName);
    assert!(one.reference.starts_with("arn:aws:secretsmanager:"), "{}", one.reference);

    assert_eq!(ours.remove(one).await.unwrap(), Removal::Removed);
    let again = ours.leftovers(ResourceKind::Secret, None, &live).await.unwrap();
    assert!(!again.leftovers.iter().any(|l| l.id == one.id), "a secret scheduled for deletion is not listed");
    assert_eq!(
        ours.describe(&one.reference).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(format!("secret {} not found", one.reference))
    );
    assert_eq!(made.len(), 105);
}
